//! Manifests and image indexes as the registry serves them, and how two digests relate: the same
//! object, an index and one of its own platform images, or different images.

use anyhow::{Context, Result};
use serde_json::Value;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// `sha256:` and 64 lowercase hex digits.
pub fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Every digest `docker image inspect`'s `.RepoDigests` JSON list holds for `repo`: an image
/// pulled or pushed several ways (a platform manifest, an index) has several.
pub fn repo_digests(repo_digests_json: &str, repo: &str) -> Vec<String> {
    let list: Vec<String> = serde_json::from_str(repo_digests_json.trim()).unwrap_or_default();
    let prefix = format!("{repo}@");
    list.iter()
        .filter_map(|d| d.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// A manifest or an index, as the registry serves it.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub json: Value,
}

impl Manifest {
    pub fn parse(digest: &str, content_type: Option<&str>, body: &str) -> Result<Manifest> {
        let json: Value = serde_json::from_str(body).context("parsing the manifest")?;
        let media_type = json["mediaType"]
            .as_str()
            .or(content_type)
            .unwrap_or("")
            .to_string();
        Ok(Manifest {
            digest: digest.to_string(),
            media_type,
            json,
        })
    }

    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX
            || self.media_type == DOCKER_LIST
            || (self.json["manifests"].is_array() && self.json["config"].is_null())
    }

    /// An index's platform images: (digest, `os/arch[/variant]`). Attestation manifests
    /// (platform `unknown/unknown`) are not images and are left out.
    pub fn platforms(&self) -> Vec<(String, String)> {
        let Some(list) = self.json["manifests"].as_array() else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|m| {
                let d = m["digest"].as_str()?;
                let p = &m["platform"];
                let (os, arch) = (
                    p["os"].as_str().unwrap_or(""),
                    p["architecture"].as_str().unwrap_or(""),
                );
                if os == "unknown" || arch == "unknown" {
                    return None;
                }
                let mut plat = format!("{os}/{arch}");
                if let Some(v) = p["variant"].as_str() {
                    plat = format!("{plat}/{v}");
                }
                Some((d.to_string(), plat))
            })
            .collect()
    }

    /// The platform `digest` is this index's image for, when it is one.
    pub fn platform_of(&self, digest: &str) -> Option<String> {
        self.platforms()
            .into_iter()
            .find(|(d, _)| d == digest)
            .map(|(_, p)| p)
    }
}

/// How another digest (what docker recorded for a push, what a git tag records) relates to the
/// digest the registry serves for the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relation {
    Same,
    /// The registry serves an index whose image for `platform` is the other digest.
    ServedIndexHolds {
        platform: String,
    },
    /// The other digest is an index whose image for `platform` is what the registry serves.
    HeldByOtherIndex {
        platform: String,
    },
    /// Not the same image.
    Different,
}

impl Relation {
    pub fn same_image(&self) -> bool {
        *self != Relation::Different
    }

    /// One line saying how `served` and `other` are the same image.
    pub fn describe(&self, served: &str, other: &str) -> String {
        match self {
            Relation::Same => format!("registry serves {served}"),
            Relation::ServedIndexHolds { platform } => format!(
                "the registry serves image index {served}, whose {platform} image is {other}: the same image"
            ),
            Relation::HeldByOtherIndex { platform } => format!(
                "the registry serves {served}, the {platform} image of image index {other}: the same image"
            ),
            Relation::Different => format!("{served} and {other} are different images"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn index() -> Manifest {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{A}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{B}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{C}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}},
               "annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#
        );
        Manifest::parse("sha256:1111", None, &body).unwrap()
    }

    #[test]
    fn an_index_lists_its_platform_images_not_attestations() {
        let i = index();
        assert!(i.is_index());
        assert_eq!(
            i.platforms(),
            [
                (A.to_string(), "linux/amd64".to_string()),
                (B.to_string(), "linux/arm64/v8".to_string())
            ]
        );
        assert_eq!(i.platform_of(B).as_deref(), Some("linux/arm64/v8"));
        assert_eq!(i.platform_of(C), None, "an attestation is not an image");
    }

    #[test]
    fn a_single_manifest_is_not_an_index() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"digest":"{A}"}},"layers":[]}}"#
        );
        let m = Manifest::parse(B, None, &body).unwrap();
        assert!(!m.is_index());
        assert!(m.platforms().is_empty());
        // No mediaType field: the Content-Type decides.
        let m = Manifest::parse(
            B,
            Some(DOCKER_LIST),
            r#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
        assert!(m.is_index());
    }

    #[test]
    fn relations_say_same_image_or_not() {
        assert!(Relation::Same.same_image());
        let r = Relation::ServedIndexHolds {
            platform: "linux/amd64".into(),
        };
        assert!(r.same_image());
        assert!(r.describe(A, B).contains("image index"));
        assert!(!Relation::Different.same_image());
    }

    #[test]
    fn repo_digests_keeps_every_digest_of_the_repository() {
        let json = format!(
            r#"["127.0.0.1:5000/observer@{A}","other/x@{B}","127.0.0.1:5000/observer@{C}"]"#
        );
        assert_eq!(
            repo_digests(&json, "127.0.0.1:5000/observer"),
            [A.to_string(), C.to_string()]
        );
        assert!(repo_digests("not json", "r").is_empty());
    }

    #[test]
    fn digests_are_checked_before_they_reach_a_url() {
        assert!(is_digest(A));
        assert!(!is_digest("sha256:AA"));
        assert!(!is_digest("sha256:../../x"));
        assert!(!is_digest(&A.replace("sha256", "sha512")));
    }
}

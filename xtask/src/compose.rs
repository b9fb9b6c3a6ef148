//! Layer 2. Compose v2 (`docker compose`) or v1 (`docker-compose`), detected at run time on the machine in
//! question. v1 needs `--compatibility` to apply `deploy.resources`.

use crate::ctx::Ctx;
use xshell::cmd;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compose {
    V2,
    V1,
}

/// The variable that forces one compose (`v1` or `v2`), e.g. to test both on one machine.
pub const FORCE_VAR: &str = "XTASK_COMPOSE";

/// Picks the compose to use from what a machine has (`v2 v1`, preferred first): v2 unless
/// `XTASK_COMPOSE` asks for the other. Errors name what is missing.
pub fn choose(available: &str) -> anyhow::Result<Compose> {
    let have: Vec<Compose> = available
        .split_whitespace()
        .filter_map(Compose::parse)
        .collect();
    match crate::core::util::env_nonempty(FORCE_VAR) {
        Some(f) => {
            let want = Compose::parse(&f).ok_or_else(|| {
                crate::core::exit::usage(format!("{FORCE_VAR}={f}: must be v1 or v2"))
            })?;
            if have.contains(&want) {
                Ok(want)
            } else {
                anyhow::bail!(
                    "{FORCE_VAR} asks for {} but the server has it not",
                    want.describe()
                )
            }
        }
        None => have
            .first()
            .copied()
            .ok_or_else(|| anyhow::anyhow!("neither `docker compose` nor `docker-compose` found")),
    }
}

impl Compose {
    pub fn parse(word: &str) -> Option<Compose> {
        match word.trim() {
            "v2" => Some(Compose::V2),
            "v1" => Some(Compose::V1),
            _ => None,
        }
    }
    pub fn argv(self) -> Vec<String> {
        match self {
            Compose::V2 => vec!["docker".into(), "compose".into()],
            Compose::V1 => vec!["docker-compose".into(), "--compatibility".into()],
        }
    }
    /// The command prefix for a remote shell script.
    pub fn shell(self) -> &'static str {
        match self {
            Compose::V2 => "docker compose",
            Compose::V1 => "docker-compose --compatibility",
        }
    }
    pub fn describe(self) -> &'static str {
        match self {
            Compose::V2 => "docker compose (v2)",
            Compose::V1 => "docker-compose (v1, run with --compatibility)",
        }
    }
}

/// The compose this machine has: v2 preferred (or what `XTASK_COMPOSE` forces, when present).
pub fn detect_local(sh: &Ctx) -> Option<Compose> {
    let mut have = Vec::new();
    if sh.ok(cmd!(sh, "docker compose version")) {
        have.push("v2");
    }
    if sh.ok(cmd!(sh, "docker-compose version")) {
        have.push("v1");
    }
    choose(&have.join(" ")).ok()
}

/// A compose file as compose itself reads it.
#[derive(Debug, Clone)]
pub struct Model {
    /// The compose document as JSON (`services.NAME...`).
    pub doc: serde_json::Value,
    /// The folder relative volume sources resolve against.
    pub base: std::path::PathBuf,
    /// Whether an unset `IMAGE_TAG` stops compose (the `${IMAGE_TAG:?...}` guard, contract §2).
    pub guard: bool,
    /// How it was read: `docker compose config` or the YAML fallback.
    pub reader: &'static str,
}

/// Reads a compose file: with `docker compose config --format json` where compose v2 is here
/// (interpolated with a placeholder IMAGE_TAG in a scratch folder, in a clean environment, and
/// run once without IMAGE_TAG to see the guard stop it); otherwise with a YAML 1.2 parser
/// (yaml-rust2: anchors, block scalars, flow mappings, quoted keys; duplicate keys are errors;
/// `<<` merge keys applied as compose does). Errors name the file.
pub fn read_file(sh: &Ctx, path: &std::path::Path) -> anyhow::Result<Model> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if detect_local(sh) == Some(Compose::V2) {
        return read_with_compose(sh, path, &text);
    }
    let doc = parse_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let guard = doc
        .pointer("/services/qts-observer/image")
        .and_then(|v| v.as_str())
        .is_some_and(|i| i.contains("${IMAGE_TAG:?"));
    Ok(Model {
        doc,
        base: path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf(),
        guard,
        reader: "YAML (compose v2 not installed here)",
    })
}

fn read_with_compose(sh: &Ctx, path: &std::path::Path, text: &str) -> anyhow::Result<Model> {
    use anyhow::Context as _;
    let dir =
        std::env::temp_dir().join(format!("obs-compose-{}", crate::core::util::random_hex(6)?));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("compose.yml");
    std::fs::write(&file, text)?;
    std::fs::write(dir.join(".env"), "")?;
    let keep: Vec<(String, String)> = ["PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    let run = |tag: Option<&str>| {
        let mut c = cmd!(sh, "docker compose -p check -f {file} config --format json").env_clear();
        for (k, v) in &keep {
            c = c.env(k, v);
        }
        if let Some(t) = tag {
            c = c.env("IMAGE_TAG", t);
        }
        sh.capture(c, None)
    };
    let unset = run(None);
    let set = run(Some("v0.0.0-check"));
    let _ = std::fs::remove_dir_all(&dir);
    let (unset, set) = (unset?, set?);
    if !set.ok {
        anyhow::bail!(
            "{}: docker compose config: {}",
            path.display(),
            set.stderr.trim()
        );
    }
    let doc: serde_json::Value =
        serde_json::from_str(&set.stdout).context("parsing `docker compose config` output")?;
    Ok(Model {
        doc,
        base: dir,
        guard: !unset.ok && unset.stderr.contains("IMAGE_TAG"),
        reader: "docker compose config (v2)",
    })
}

/// YAML text → JSON (first document), with `<<` merge keys applied.
pub fn parse_yaml(text: &str) -> Result<serde_json::Value, String> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    docs.first()
        .map(to_json)
        .ok_or_else(|| "empty YAML document".to_string())
}

fn to_json(y: &yaml_rust2::Yaml) -> serde_json::Value {
    use serde_json::Value;
    use yaml_rust2::Yaml;
    match y {
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(r.clone())),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => {
            let mut m = serde_json::Map::new();
            let mut merged = Vec::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    other => match to_json(other) {
                        Value::String(s) => s,
                        v => v.to_string(),
                    },
                };
                if key == "<<" {
                    match v {
                        Yaml::Array(items) => merged.extend(items.iter().map(to_json)),
                        other => merged.push(to_json(other)),
                    }
                } else {
                    m.insert(key, to_json(v));
                }
            }
            for src in merged {
                if let Value::Object(o) = src {
                    for (k, v) in o {
                        m.entry(k).or_insert(v);
                    }
                }
            }
            Value::Object(m)
        }
        Yaml::Null | Yaml::BadValue | Yaml::Alias(_) => Value::Null,
    }
}

/// CPUs from a compose value (`"1.0"`, `1`, `0.5`).
pub fn cpus(v: &serde_json::Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str()?.trim().parse().ok())
}

/// Bytes from a compose memory value (`512M`, `"536870912"`, `1g`, `256mb`; 1024-based units).
pub fn bytes(v: &serde_json::Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let s = v.as_str()?.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mul) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: f64 = num.parse().ok()?;
    Some((n * mul as f64) as u64)
}

/// A service's volumes as (absolute source, target), short or long syntax.
pub fn volumes(
    svc: &serde_json::Value,
    base: &std::path::Path,
) -> Vec<(std::path::PathBuf, String)> {
    let norm = |src: &str| {
        let p = std::path::Path::new(src);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        p.components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect()
    };
    svc["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| match v {
            serde_json::Value::String(s) => {
                let mut parts = s.splitn(3, ':');
                let (src, dst) = (parts.next()?, parts.next()?);
                Some((norm(src), dst.to_string()))
            }
            serde_json::Value::Object(_) => Some((
                norm(v["source"].as_str()?),
                v["target"].as_str()?.to_string(),
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_that_the_old_reader_got_wrong() {
        let text = r#"
x-limits: &limits
  cpus: "1.0"
  memory: 512M
services:
  "qts-observer":
    image: 'r/o:${IMAGE_TAG:?IMAGE_TAG required}'
    command: >
      python3 -m observer
    deploy: {resources: {limits: *limits, reservations: {cpus: '0.5', memory: 256M}}}
    volumes:
      - type: bind
        source: ./data
        target: /app/data/observer
      - "./logs:/app/logs:rw"
    labels:
      <<: {a: "1"}
      b: "it's"
"#;
        let d = parse_yaml(text).unwrap();
        let s = &d["services"]["qts-observer"];
        assert_eq!(cpus(&s["deploy"]["resources"]["limits"]["cpus"]), Some(1.0));
        assert_eq!(
            bytes(&s["deploy"]["resources"]["limits"]["memory"]),
            Some(512 << 20)
        );
        assert_eq!(
            bytes(&s["deploy"]["resources"]["reservations"]["memory"]),
            Some(256 << 20)
        );
        assert_eq!(s["command"], "python3 -m observer\n");
        assert_eq!(s["labels"], json!({"a": "1", "b": "it's"}));
        let v = volumes(s, std::path::Path::new("/b"));
        assert_eq!(v[0], ("/b/data".into(), "/app/data/observer".to_string()));
        assert_eq!(v[1], ("/b/logs".into(), "/app/logs".to_string()));
        assert!(parse_yaml("a: 1\na: 2\n")
            .unwrap_err()
            .contains("duplicated key"));
        assert!(parse_yaml("---\nservices: {}\n").is_ok());
    }

    #[test]
    fn choosing_a_compose() {
        // (XTASK_COMPOSE is unset in unit tests.)
        assert_eq!(choose("v2 v1").unwrap(), Compose::V2);
        assert_eq!(choose(" v1").unwrap(), Compose::V1);
        assert!(choose("").is_err() && choose("none").is_err());
    }

    #[test]
    fn units() {
        assert_eq!(bytes(&json!("536870912")), Some(536870912));
        assert_eq!(bytes(&json!("1g")), Some(1 << 30));
        assert_eq!(bytes(&json!("256mb")), Some(256 << 20));
        assert_eq!(cpus(&json!(0.5)), Some(0.5));
    }
}

//! `cargo xtask release vX.Y.Z`: build the image, push it, verify the registry serves what was
//! built (by digest), tag the commit with an annotated tag recording the digest, push the tag.
//! Nothing changes anywhere until every read-only check has passed.

use crate::config::{self, Env};
use crate::core::exit::fail;
use crate::core::records::StepTime;
use crate::core::util::{now_rfc3339, round3};
use crate::core::version;
use crate::ctx::Ctx;
use crate::plan::{Executor, Plan, Real, Step};
use crate::registry::{self, Client};
use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use xshell::cmd;

pub const SOURCE: &str = "https://github.com/tawbury/observer";
/// Where the real digest goes in the planned tag message.
const DIGEST_PLACEHOLDER: &str = "<digest of the pushed image>";

#[derive(Args)]
pub struct Release {
    /// The version to release: vMAJOR.MINOR.PATCH[-PRERELEASE].
    version: String,
    /// The environment (deployment_config.json) to release to.
    #[arg(long, default_value = "production")]
    env: String,
    /// Print every command the release would run; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Create the annotated tag but do not push it.
    #[arg(long)]
    no_push_tag: bool,
    /// The branch HEAD must be on (default: the environment's release_branch).
    #[arg(long)]
    branch: Option<String>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// What the read-only preflight found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub head: String,
    /// The registry already serves this tag, built from HEAD: skip build and push.
    pub image_digest: Option<String>,
    /// An annotated tag for this version already points at HEAD (a previous run made it).
    pub local_tag: bool,
}

#[derive(Serialize)]
struct Summary {
    version: String,
    image: String,
    digest: String,
    git_tag: String,
    revision: String,
    resumed: bool,
    tag_pushed: bool,
    dry_run: bool,
    steps: Vec<StepTime>,
    elapsed_s: f64,
}

pub fn tag_message(image: &str, digest: &str) -> String {
    format!("observer {image}\n\nimage: {image}\ndigest: {digest}\n")
}

/// The mutating part of a release, as data.
pub fn plan(
    env: &Env,
    version: &str,
    facts: &Facts,
    push_tag: bool,
    user: &str,
    created: &str,
) -> Plan {
    let image = env.image(version);
    let mut p = Plan::default();
    if facts.image_digest.is_none() {
        p.push(Step::local(
            "build",
            format!("Build {image}"),
            &[
                "docker",
                "build",
                "--pull=false",
                "--build-arg",
                &format!("BASE_IMAGE={}", env.cfg.base_image),
                "--build-arg",
                &format!("VERSION={version}"),
                "--build-arg",
                &format!("REVISION={}", facts.head),
                "--build-arg",
                &format!("CREATED={created}"),
                "--build-arg",
                &format!("SOURCE={SOURCE}"),
                "--label",
                &format!("org.opencontainers.image.version={version}"),
                "--label",
                &format!("org.opencontainers.image.revision={}", facts.head),
                "--label",
                &format!("org.opencontainers.image.created={created}"),
                "-t",
                &image,
                "-f",
                "app/Dockerfile",
                "app",
            ],
        ));
        p.push(
            Step::local(
                "login",
                format!("Log in to {}", env.registry),
                &[
                    "docker",
                    "login",
                    "--username",
                    user,
                    "--password-stdin",
                    &env.registry,
                ],
            )
            .secret_stdin(Vec::new()),
        );
        p.push(Step::local(
            "push",
            format!("Push {image}"),
            &["docker", "push", &image],
        ));
        p.push(
            Step::local(
                "local-digest",
                "Read the pushed image's digest",
                &[
                    "docker",
                    "image",
                    "inspect",
                    "--format",
                    "{{json .RepoDigests}}",
                    &image,
                ],
            )
            .read_only(),
        );
    }
    if !facts.local_tag {
        p.push(Step::local(
            "tag",
            format!(
                "Tag {} as {version}",
                &facts.head[..12.min(facts.head.len())]
            ),
            &[
                "git",
                "tag",
                "--annotate",
                version,
                "--message",
                &tag_message(&image, DIGEST_PLACEHOLDER),
                &facts.head,
            ],
        ));
    }
    if push_tag {
        p.push(Step::local(
            "push-tag",
            format!("Push tag {version} to {}", env.git_remote),
            &[
                "git",
                "push",
                "--quiet",
                &env.git_remote,
                &format!("refs/tags/{version}"),
            ],
        ));
    }
    p
}

impl Release {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let t0 = std::time::Instant::now();
        version::validate(&self.version)?;
        // SIGINT/SIGTERM stop the release between steps (it resumes where it stopped).
        if let Err(e) = crate::core::signals::install() {
            eprintln!("warning: SIGINT/SIGTERM cannot be deferred to a safe point: {e}");
        }
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        let creds = registry::credentials(sh, &env); // masks the token first under Actions
        let branch = self
            .branch
            .clone()
            .unwrap_or_else(|| env.cfg.release_branch.clone());
        let image = env.image(&self.version);

        let mut x = Executor::new(sh, self.dry_run, Box::new(Real::default()));
        let facts = x.step("Preflight (read-only)", |_| {
            preflight(sh, &env, &self.version, &branch, creds.is_some())
        })?;
        if facts.image_digest.is_some() {
            eprintln!("    resuming: {image} is already in the registry, built from HEAD; continuing with the tag");
        }
        let user = creds.as_ref().map(|c| c.user.clone()).unwrap_or_default();
        let mut plan = plan(
            &env,
            &self.version,
            &facts,
            !self.no_push_tag,
            &user,
            &now_rfc3339(),
        );
        if creds.is_none() {
            plan.steps.retain(|s| s.id != "login"); // an existing `docker login` is used
        }
        if let Some(c) = &creds {
            for s in &mut plan.steps {
                if s.id == "login" {
                    *s = s
                        .clone()
                        .secret_stdin(format!("{}\n", c.token).into_bytes());
                }
            }
        }
        if self.dry_run {
            eprintln!("==> Plan (dry run: nothing below is run)");
            plan.print(sh);
        }
        let mut digest = facts.image_digest.clone().unwrap_or_default();
        let mut tag_pushed = false;
        for step in &plan.steps {
            let mut step = step.clone();
            if step.id == "tag" {
                if let crate::plan::Cmd::Local(argv) = &mut step.cmd {
                    for a in argv.iter_mut() {
                        *a = a.replace(
                            DIGEST_PLACEHOLDER,
                            if digest.is_empty() {
                                DIGEST_PLACEHOLDER
                            } else {
                                &digest
                            },
                        );
                    }
                }
            }
            if self.dry_run {
                continue;
            }
            let out = x.run_step(&step).map_err(|e| {
                let recover = match step.id {
                    "push-tag" => format!(
                        "\nrecover: fix the remote, then run `cargo xtask release {} --env {}` again (it resumes at the tag push)",
                        self.version, self.env
                    ),
                    "build" => "\nnothing was pushed or tagged".to_string(),
                    _ => format!("\nrecover: run `cargo xtask release {} --env {}` again", self.version, self.env),
                };
                fail(format!("{e:#}{recover}"))
            })?;
            if step.id == "local-digest" {
                digest = x.step("Verify the registry serves the built image", |_| {
                    verify_pushed(sh, &env, &self.version, &out.stdout)
                })?;
            }
            if step.id == "push-tag" {
                tag_pushed = true;
            }
        }
        let summary = Summary {
            version: self.version.clone(),
            image: image.clone(),
            digest: digest.clone(),
            git_tag: self.version.clone(),
            revision: facts.head.clone(),
            resumed: facts.image_digest.is_some() || facts.local_tag,
            tag_pushed,
            dry_run: self.dry_run,
            steps: x
                .timings
                .iter()
                .map(|(s, t)| StepTime {
                    step: s.clone(),
                    seconds: round3(*t),
                })
                .collect(),
            elapsed_s: round3(t0.elapsed().as_secs_f64()),
        };
        if self.json {
            println!("{}", sh.mask(&serde_json::to_string_pretty(&summary)?));
        } else {
            eprintln!(
                "\nrelease {}{}:\n  image   {image}\n  digest  {}\n  tag     {} on {}{}\n  time    {:.1}s",
                self.version,
                if self.dry_run { " (dry run)" } else { "" },
                if digest.is_empty() { "(not pushed)" } else { &digest },
                self.version,
                facts.head,
                if tag_pushed { format!(", pushed to {}", env.git_remote) } else { String::new() },
                summary.elapsed_s
            );
        }
        Ok(())
    }
}

/// The read-only checks (the release branch is fetched); each failure names the problem and the
/// fix (exit 1).
fn preflight(sh: &Ctx, env: &Env, version: &str, branch: &str, have_creds: bool) -> Result<Facts> {
    let dirty = sh.read(cmd!(sh, "git status --porcelain --untracked-files=no"))?;
    if !dirty.is_empty() {
        return Err(fail(format!("the work tree has uncommitted changes to tracked files:\n{dirty}\ncommit or stash them first")));
    }
    let head = sh.read(cmd!(sh, "git rev-parse HEAD"))?;
    let current = sh.read(cmd!(sh, "git rev-parse --abbrev-ref HEAD"))?;
    if current != branch {
        return Err(fail(format!("HEAD is on `{current}`, not on the release branch `{branch}`: check out `{branch}` (or pass --branch)")));
    }
    pushed(sh, env, &head, branch)?;
    let tag_ref = format!("refs/tags/{version}");
    let peeled = format!("{tag_ref}^{{commit}}");
    let local_tag = match sh.read(cmd!(sh, "git rev-parse -q --verify {peeled}")) {
        Ok(commit) if commit == head => {
            // Ours only if it is annotated and records this image.
            let body = sh
                .read(cmd!(sh, "git tag -l --format=%(contents) {version}"))
                .unwrap_or_default();
            if !body.contains(&format!("image: {}", env.image(version))) {
                return Err(fail(format!("tag {version} already exists locally and does not record image {}: delete it (`git tag -d {version}`) or choose another version", env.image(version))));
            }
            true
        }
        Ok(commit) => {
            return Err(fail(format!("tag {version} already exists locally on {commit}, not on HEAD {head}: released tags are never moved")));
        }
        Err(_) => false,
    };
    let git_remote = &env.git_remote;
    let remote = sh
        .read(cmd!(sh, "git ls-remote --tags {git_remote} {tag_ref}"))
        .with_context(|| {
            format!(
                "asking the git remote `{}` for tag {version}",
                env.git_remote
            )
        })?;
    if !remote.is_empty() {
        return Err(fail(format!("tag {version} already exists on the remote `{}`: this version is released; choose a new version", env.git_remote)));
    }
    if !sh.ok(cmd!(sh, "docker info")) {
        return Err(fail(
            "the docker daemon does not answer (`docker info` failed): start docker",
        ));
    }
    if !have_creds && !docker_logged_in(&env.registry) {
        return Err(fail(format!(
            "no registry credentials: set REGISTRY_USER and REGISTRY_TOKEN (or `docker login {}`)",
            env.registry
        )));
    }
    let mut client = Client::new(sh, env);
    let image_digest = match client.digest(env.repo_path(), version)? {
        None => None,
        Some(d) => {
            let labels = client.labels(env.repo_path(), version)?;
            let rev = labels
                .get("org.opencontainers.image.revision")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            if rev != head {
                return Err(fail(format!(
                    "{} already exists in the registry (revision {}), not built from HEAD {head}: released tags are immutable; choose a new version",
                    env.image(version),
                    if rev.is_empty() { "unknown" } else { rev }
                )));
            }
            Some(d)
        }
    };
    if image_digest.is_none() && local_tag {
        return Err(fail(format!("tag {version} exists locally but {} is not in the registry: delete the tag (`git tag -d {version}`) and release again", env.image(version))));
    }
    Ok(Facts {
        head,
        image_digest,
        local_tag,
    })
}

/// HEAD must be contained in the git remote's release branch, as fetched now: a release never
/// tags (and its tag push never carries) commits the release branch does not have.
fn pushed(sh: &Ctx, env: &Env, head: &str, branch: &str) -> Result<()> {
    let remote = &env.git_remote;
    let heads = format!("refs/heads/{branch}");
    let listed = sh
        .read(cmd!(sh, "git ls-remote --heads {remote} {heads}"))
        .with_context(|| format!("asking the git remote `{remote}` for branch `{branch}`"))?;
    let Some(tip) = listed.split_whitespace().next().map(str::to_string) else {
        return Err(fail(format!(
            "the release branch `{branch}` is not on the git remote `{remote}`: push it first (`git push {remote} {branch}`)"
        )));
    };
    sh.read(cmd!(
        sh,
        "git fetch --quiet --no-tags --no-write-fetch-head {remote} {heads}"
    ))
    .with_context(|| format!("fetching `{branch}` from the git remote `{remote}`"))?;
    if !sh.ok(cmd!(sh, "git merge-base --is-ancestor {head} {tip}")) {
        return Err(fail(format!(
            "HEAD {head} is not on `{branch}` of the git remote `{remote}` (at {tip}): push it first (`git push {remote} HEAD:{branch}`); a release tags only commits the release branch has"
        )));
    }
    Ok(())
}

fn docker_logged_in(registry: &str) -> bool {
    let home = std::env::var("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| std::path::Path::new(&h).join(".docker")));
    home.ok()
        .and_then(|d| std::fs::read_to_string(d.join("config.json")).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["auths"].get(registry).is_some())
}

/// The digest docker recorded for the push must be what the registry serves for the tag, compared
/// as the same kind of object: equal, or an image index and its own platform image (a BuildKit
/// push records and serves an index). Returns what the registry serves (what a server pulling the
/// tag records).
fn verify_pushed(sh: &Ctx, env: &Env, version: &str, repo_digests_json: &str) -> Result<String> {
    let pushed = registry::repo_digests(repo_digests_json, &env.repo());
    if pushed.is_empty() {
        return Err(fail(format!(
            "docker recorded no digest for {} after the push",
            env.repo()
        )));
    }
    let mut client = Client::new(sh, env);
    let served = client.digest(env.repo_path(), version)?.with_context(|| {
        format!(
            "the registry does not serve {} after the push",
            env.image(version)
        )
    })?;
    match client.find_same(env.repo_path(), &served, &pushed)? {
        Some((local, rel)) => eprintln!("    {}", rel.describe(&served, &local)),
        None => {
            return Err(fail(format!(
                "the registry serves {served} for {}, but the image built and pushed is {}",
                env.image(version),
                pushed.join(" or ")
            )))
        }
    }
    Ok(served)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Env};

    fn env() -> Env {
        config::test_env("/srv/observer", "/tmp/remote.git")
    }

    const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn normal_run_plan() {
        let facts = Facts {
            head: HEAD.into(),
            image_digest: None,
            local_tag: false,
        };
        let p = plan(&env(), "v1.2.3", &facts, true, "ci", "2026-11-28T00:00:00Z");
        assert_eq!(
            p.ids(),
            ["build", "login", "push", "local-digest", "tag", "push-tag"]
        );
        let build = p.get("build").unwrap().argv();
        assert!(build.contains(&"127.0.0.1:5000/observer:v1.2.3"));
        assert!(build.contains(&"REVISION=0123456789abcdef0123456789abcdef01234567"));
        assert!(build.contains(&"VERSION=v1.2.3"));
        let login = p.get("login").unwrap();
        assert!(login.argv().contains(&"--password-stdin"));
        assert_eq!(
            p.get("push-tag").unwrap().argv(),
            [
                "git",
                "push",
                "--quiet",
                "/tmp/remote.git",
                "refs/tags/v1.2.3"
            ]
        );
        assert!(p.steps.iter().all(|s| s.host == crate::plan::Host::Local));
    }

    #[test]
    fn resumed_run_plan_skips_build_and_push() {
        let facts = Facts {
            head: HEAD.into(),
            image_digest: Some("sha256:aa".into()),
            local_tag: false,
        };
        let p = plan(&env(), "v1.2.3", &facts, true, "ci", "t");
        assert_eq!(p.ids(), ["tag", "push-tag"]);
        let facts = Facts {
            local_tag: true,
            ..facts
        };
        assert_eq!(
            plan(&env(), "v1.2.3", &facts, true, "ci", "t").ids(),
            ["push-tag"]
        );
        assert_eq!(
            plan(&env(), "v1.2.3", &facts, false, "ci", "t").ids(),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn tag_message_records_image_and_digest() {
        let m = tag_message("r/o:v1.0.0", "sha256:ff");
        assert!(m.contains("image: r/o:v1.0.0\n"));
        assert!(m.contains("digest: sha256:ff\n"));
    }
}

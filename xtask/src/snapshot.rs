//! `cargo xtask snapshot`: verified backups of the server's deploy root (contract §1 "tar backup",
//! §7 "check the data volume"). The server only runs `sh`, `tar` and `cat`; the xtask streams the
//! tar through itself, compresses it (multi-threaded zstd) and hashes it (sha256), and streams the
//! result back into the server's backups directory. Memory stays bounded: nothing is buffered
//! whole. `ID.manifest.json` is written last, atomically: without it a snapshot is incomplete.

use crate::config::{self, Env};
use crate::deploy::{self, Steps};
use crate::plan::{Executor, Step};
use crate::shell::{fail, hex, now_rfc3339, sh_quote, usage, Shell};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Stdio};

#[derive(Args)]
pub struct Snapshot {
    #[command(subcommand)]
    cmd: SnapshotCmd,
    /// The environment (deployment_config.json).
    #[arg(long, default_value = "production", global = true)]
    env: String,
    /// Print JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Snapshot config/ (with the archive), data/, logs/ and .deploy/ (never .env).
    Create {
        /// Leave logs/ out.
        #[arg(long)]
        no_logs: bool,
    },
    /// Every snapshot with its state (valid / incomplete / corrupt).
    List,
    /// Re-hash the archive and every entry against the manifest.
    Verify { id: String },
    /// Verify, stop the service, move the current state aside, extract, start the recorded version.
    Restore {
        id: String,
        /// Required when not interactive.
        #[arg(long)]
        yes: bool,
    },
    /// Keep the newest N valid snapshots (default: the environment's keep_snapshots).
    Prune {
        #[arg(long)]
        keep: Option<usize>,
    },
    /// Copy a snapshot's three files to a local directory (hash checked).
    Download {
        id: String,
        #[arg(long, default_value = ".")]
        to: PathBuf,
    },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Entry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Manifest {
    pub id: String,
    pub created: String,
    pub env: String,
    pub server: String,
    /// The version running when the snapshot was taken (empty: none).
    pub version: String,
    pub no_logs: bool,
    pub archive: ArchiveInfo,
    pub entries: Vec<Entry>,
    /// JSON-lines files captured while being appended to: bytes after their last newline, which
    /// a restore cuts off so that every line of the restored file parses.
    pub partial_tails: Vec<PartialTail>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ArchiveInfo {
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PartialTail {
    pub path: String,
    pub keep_bytes: u64,
}

pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with(['.', '-'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "invalid snapshot id {id:?}: letters, digits, '-' and '.' only (see `snapshot list`)"
        )))
    }
}

fn new_id() -> Result<String> {
    let t = now_rfc3339().replace(['-', ':'], "");
    Ok(format!("{t}-{}", crate::shell::random_hex(3)?))
}

// ------------------------------------------------------------------------------ stream plumbing

/// Copies everything read from `r` into `w` (the compressor) on the way through.
struct Tee<'w, R, W: Write> {
    r: R,
    w: &'w mut W,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.w.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Hashes and counts what passes through, in either direction.
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    pub bytes: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
    pub fn finish(self) -> (T, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<T: Write> Write for Hashing<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read> Read for Hashing<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn sha256_of(r: &mut impl Read) -> io::Result<(String, u64, Option<u8>)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n_total = 0u64;
    let mut last = None;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        n_total += n as u64;
        last = Some(buf[n - 1]);
    }
    Ok((hex(&h.finalize()), n_total, last))
}

fn kind_of(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Regular | tar::EntryType::Continuous => "file",
        tar::EntryType::Directory => "dir",
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Link => "hardlink",
        tar::EntryType::Char => "char-device",
        tar::EntryType::Block => "block-device",
        tar::EntryType::Fifo => "fifo",
        _ => "other",
    }
}

/// Refuses what a restore must never write: absolute paths, `..` components, links pointing out
/// of the target, device files. Checked on every entry BEFORE anything is extracted.
pub fn check_entry(path: &str, kind: &str, link: Option<&str>) -> std::result::Result<(), String> {
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(format!("absolute path {path:?}"));
    }
    if p.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    }) {
        return Err(format!("path {path:?} has a '..' component"));
    }
    match kind {
        "file" | "dir" => Ok(()),
        "symlink" | "hardlink" => {
            let target = link.unwrap_or("");
            let t = Path::new(target);
            if t.is_absolute() {
                return Err(format!(
                    "{kind} {path:?} points to the absolute path {target:?}"
                ));
            }
            // Resolve lexically: a symlink is relative to its directory, a hard link to the root.
            let mut depth: i64 = if kind == "symlink" {
                p.components().count() as i64 - 1
            } else {
                0
            };
            for c in t.components() {
                match c {
                    Component::ParentDir => depth -= 1,
                    Component::Normal(_) => depth += 1,
                    _ => {}
                }
                if depth < 0 {
                    return Err(format!(
                        "{kind} {path:?} points outside the target ({target:?})"
                    ));
                }
            }
            Ok(())
        }
        other => Err(format!(
            "{other} entry {path:?} (device and special files are refused)"
        )),
    }
}

/// Walks a tar stream: checks each entry, hashes each file.
fn walk<R: Read>(r: R, mut each: impl FnMut(Entry, Option<u8>) -> Result<()>) -> Result<R> {
    let mut ar = tar::Archive::new(r);
    for e in ar.entries().context("reading the tar stream")? {
        let mut e = e.context("reading a tar entry")?;
        let path = String::from_utf8_lossy(&e.path_bytes())
            .trim_end_matches('/')
            .to_string();
        let kind = kind_of(e.header().entry_type());
        let link = e
            .link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        check_entry(&path, kind, link.as_deref())
            .map_err(|m| fail(format!("unsafe archive entry: {m}; nothing was extracted")))?;
        let mode = e.header().mode().unwrap_or(0);
        let size = e.header().size().unwrap_or(0);
        let (sha, last) = if kind == "file" {
            let (h, _, last) = sha256_of(&mut e)?;
            (Some(h), last)
        } else {
            (None, None)
        };
        each(
            Entry {
                path,
                kind: kind.into(),
                size,
                mode,
                sha256: sha,
                link,
            },
            last,
        )?;
    }
    Ok(ar.into_inner())
}

fn wait_ok(child: &mut Child, what: &str) -> Result<()> {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{what} failed on the server: {}", err.trim());
    }
    Ok(())
}

// ------------------------------------------------------------------------------------- scripts

fn backups(env: &Env) -> String {
    sh_quote(&env.backups_dir)
}

fn tar_script(env: &Env, no_logs: bool) -> String {
    let dirs = if no_logs {
        "config data .deploy"
    } else {
        "config data logs .deploy"
    };
    format!(
        "cd {} && set -- && for d in {dirs}; do [ -e \"$d\" ] && set -- \"$@\" \"$d\"; done; tar -cf - --numeric-owner --exclude=.deploy/lock \"$@\"; rc=$?; [ $rc -le 1 ]",
        sh_quote(&env.remote_dir)
    )
}

// ---------------------------------------------------------------------------------- operations

/// Takes a snapshot over `x`'s session to `server`. Used by `snapshot create` and by `deploy`.
pub fn create(
    x: &mut Executor,
    env: &Env,
    server: &str,
    version: &str,
    no_logs: bool,
) -> Result<Manifest> {
    let id = new_id()?;
    let b = backups(env);
    let file = format!("{id}.tar.zst");
    let partial = format!("{file}.partial");
    let session = x.session(server)?;
    let mut src = session
        .command(&tar_script(env, no_logs), false)?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the remote tar")?;
    let mut dst = session
        .command(
            &format!("mkdir -p {b} && cat > {b}/{}", sh_quote(&partial)),
            true,
        )?
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the remote writer")?;
    let result = (|| -> Result<(Vec<Entry>, Vec<PartialTail>, String, u64)> {
        let sink =
            io::BufWriter::with_capacity(256 * 1024, dst.stdin.take().context("writer stdin")?);
        let mut enc = zstd::stream::write::Encoder::new(Hashing::new(sink), 3)?;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        enc.multithread(threads)?;
        let mut entries = Vec::new();
        let mut tails = Vec::new();
        {
            let tee = Tee {
                r: src.stdout.take().context("tar stdout")?,
                w: &mut enc,
            };
            let mut rest = walk(tee, |e, last| {
                if e.kind == "file"
                    && e.path.ends_with(".jsonl")
                    && e.size > 0
                    && last != Some(b'\n')
                {
                    tails.push(PartialTail {
                        path: e.path.clone(),
                        keep_bytes: 0,
                    });
                }
                entries.push(e);
                Ok(())
            })?;
            io::copy(&mut rest, &mut io::sink())?; // the end-of-archive blocks
        }
        let hashing = enc.finish().context("finishing the zstd stream")?;
        let (mut sink, sha, size) = hashing.finish();
        sink.flush().context("writing the snapshot to the server")?;
        drop(sink);
        Ok((entries, tails, sha, size))
    })();
    let streamed = result.and_then(|r| {
        wait_ok(&mut src, "tar")?;
        wait_ok(&mut dst, "writing the snapshot (disk full?)")?;
        Ok(r)
    });
    let (entries, mut tails, sha, size) = match streamed {
        Ok(r) => r,
        Err(e) => {
            let _ = src.kill();
            let _ = dst.kill();
            let _ = src.wait();
            let _ = dst.wait();
            let _ = x.run(&Step::remote(
                "snapshot-cleanup",
                "Remove the partial snapshot",
                server,
                format!("rm -f {b}/{}", sh_quote(&partial)),
            ));
            return Err(fail(format!(
                "snapshot failed, the partial file was removed: {e:#}"
            )));
        }
    };
    // Where a JSON-lines file was caught mid-append, keep everything up to its last newline.
    for t in &mut tails {
        t.keep_bytes = last_newline(x, env, server, &id, &t.path)?;
    }
    let manifest = Manifest {
        id: id.clone(),
        created: now_rfc3339(),
        env: env.name.clone(),
        server: server.to_string(),
        version: version.to_string(),
        no_logs,
        archive: ArchiveInfo {
            file: file.clone(),
            size,
            sha256: sha.clone(),
        },
        entries,
        partial_tails: tails,
    };
    let finalize = format!(
        "cd {b} && mv -f {p} {f} && printf '%s  %s\\n' {sha} {f} > {f}.sha256 && cat > {id}.manifest.json.tmp && mv -f {id}.manifest.json.tmp {id}.manifest.json",
        p = sh_quote(&partial),
        f = sh_quote(&file),
        id = sh_quote(&id),
    );
    let step = Step::remote(
        "snapshot-finish",
        "Write the checksum and the manifest (last)",
        server,
        finalize,
    )
    .data_stdin(serde_json::to_vec(&manifest)?);
    x.run(&step)?;
    Ok(manifest)
}

/// For a partially captured JSON-lines file: the length up to its last newline, found by
/// streaming the just-written snapshot's entry locally (never the live file).
fn last_newline(x: &mut Executor, env: &Env, server: &str, id: &str, path: &str) -> Result<u64> {
    let file = format!("{}/{id}.tar.zst.partial", env.backups_dir);
    let mut child = x
        .session(server)?
        .command(&format!("cat {}", sh_quote(&file)), false)?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let dec = zstd::stream::read::Decoder::new(child.stdout.take().context("stdout")?)?;
    let mut ar = tar::Archive::new(dec);
    let mut keep = 0u64;
    for e in ar.entries()? {
        let mut e = e?;
        if String::from_utf8_lossy(&e.path_bytes()) == path {
            let mut buf = vec![0u8; 64 * 1024];
            let mut pos = 0u64;
            loop {
                let n = e.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
                    keep = pos + i as u64 + 1;
                }
                pos += n as u64;
            }
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(keep)
}

fn read_manifest(x: &mut Executor, env: &Env, server: &str, id: &str) -> Result<Manifest> {
    let out = x.exec(
        &Step::remote(
            "manifest",
            "Read the manifest",
            server,
            format!("cat {}/{}.manifest.json", backups(env), sh_quote(id)),
        )
        .read_only(),
    )?;
    if !out.ok {
        return Err(fail(format!("snapshot {id}: no manifest on {server} (unknown or incomplete snapshot; see `snapshot list`)")));
    }
    serde_json::from_str(&out.stdout).with_context(|| format!("parsing the manifest of {id}"))
}

/// Streams the archive from the server, checks every entry (safety first) against the manifest,
/// and the archive's sha256. With `extract_to`, the verified tar stream is also fed to `tar -x`
/// on the server.
fn check_stream(
    x: &mut Executor,
    env: &Env,
    server: &str,
    m: &Manifest,
    extract: Option<&str>,
) -> Result<()> {
    let file = format!("{}/{}", env.backups_dir, m.archive.file);
    let session = x.session(server)?;
    let mut src = session
        .command(&format!("cat {}", sh_quote(&file)), false)?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut dst = match extract {
        Some(dir) => Some(
            session
                .command(
                    &format!("cd {} && tar -xf - --numeric-owner", sh_quote(dir)),
                    true,
                )?
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?,
        ),
        None => None,
    };
    let hashed = Hashing::new(src.stdout.take().context("stdout")?);
    let dec = zstd::stream::read::Decoder::new(hashed)?;
    let i = std::cell::Cell::new(0usize);
    let check = |e: Entry, _last: Option<u8>| -> Result<()> {
        let want = m
            .entries
            .get(i.get())
            .ok_or_else(|| fail(format!("entry {} is not in the manifest", e.path)))?;
        if *want != e {
            return Err(fail(format!(
                "mismatch at {}: manifest says {} bytes sha256 {}, archive has {} bytes sha256 {}",
                e.path,
                want.size,
                want.sha256.as_deref().unwrap_or("-"),
                e.size,
                e.sha256.as_deref().unwrap_or("-")
            )));
        }
        i.set(i.get() + 1);
        Ok(())
    };
    let outcome = (|| -> Result<()> {
        let dec = match dst.as_mut() {
            Some(d) => {
                let mut sink = d.stdin.take().context("tar stdin")?;
                let tee = Tee {
                    r: dec,
                    w: &mut sink,
                };
                let mut rest = walk(tee, check)?;
                io::copy(&mut rest, &mut io::sink())?; // end-of-archive blocks, to tar -x too
                rest.r
            }
            None => {
                let mut rest = walk(dec, check)?;
                io::copy(&mut rest, &mut io::sink())?;
                rest
            }
        };
        let mut hashed = dec.finish().into_inner();
        io::copy(&mut hashed, &mut io::sink())?;
        let (_, sha, size) = hashed.finish();
        if i.get() != m.entries.len() {
            return Err(fail(format!(
                "the archive has {} entries, the manifest {}",
                i.get(),
                m.entries.len()
            )));
        }
        if sha != m.archive.sha256 || size != m.archive.size {
            return Err(fail(format!(
                "archive {} has sha256 {sha} ({size} bytes); the manifest says {} ({} bytes)",
                m.archive.file, m.archive.sha256, m.archive.size
            )));
        }
        Ok(())
    })();
    let _ = src.kill();
    let _ = src.wait();
    if let Some(mut d) = dst {
        if outcome.is_err() {
            let _ = d.kill();
        }
        let r = wait_ok(&mut d, "tar -x");
        outcome?;
        r?;
        return Ok(());
    }
    outcome
}

#[derive(Serialize)]
struct Listed {
    id: String,
    state: String,
    size: u64,
    created: String,
    version: String,
    files: Vec<String>,
}

fn list(x: &mut Executor, env: &Env, server: &str) -> Result<Vec<Listed>> {
    let script = format!(
        "cd {b} 2>/dev/null || exit 0; for f in *.tar.zst *.tar.zst.partial; do [ -e \"$f\" ] || continue; id=${{f%%.tar.zst*}}; s=$(stat -c %s \"$f\"); if [ \"$f\" = \"$id.tar.zst\" ] && [ -e \"$id.manifest.json\" ]; then printf 'M %s %s ' \"$id\" \"$s\"; tr -d '\\n' < \"$id.manifest.json\"; echo; else echo \"I $id $s\"; fi; done",
        b = backups(env)
    );
    let out = x.run(&Step::remote("list", "List snapshots", server, script).read_only())?;
    let mut v = Vec::new();
    for l in out.stdout.lines() {
        let mut w = l.splitn(4, ' ');
        let (tag, id, size) = (
            w.next().unwrap_or(""),
            w.next().unwrap_or("").to_string(),
            w.next().unwrap_or("0").parse().unwrap_or(0),
        );
        let files = |id: &str| {
            vec![
                format!("{}/{id}.tar.zst", env.backups_dir),
                format!("{}/{id}.tar.zst.sha256", env.backups_dir),
                format!("{}/{id}.manifest.json", env.backups_dir),
            ]
        };
        if tag == "M" {
            let m: Option<Manifest> = serde_json::from_str(w.next().unwrap_or("")).ok();
            let (state, created, version) = match &m {
                Some(m) if m.archive.size == size => {
                    ("valid", m.created.clone(), m.version.clone())
                }
                Some(m) => ("corrupt", m.created.clone(), m.version.clone()),
                None => ("corrupt", String::new(), String::new()),
            };
            v.push(Listed {
                files: files(&id),
                id,
                state: state.into(),
                size,
                created,
                version,
            });
        } else if tag == "I" {
            v.push(Listed {
                files: files(&id),
                id,
                state: "incomplete".into(),
                size,
                created: String::new(),
                version: String::new(),
            });
        }
    }
    v.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(v)
}

/// Restores snapshot `id`: verify, lock, stop, move aside, extract, cut partial tails, start.
pub fn restore(sh: &Shell, x: &mut Executor, env: &Env, server: &str, id: &str) -> Result<String> {
    let m = x.step(&format!("Verify snapshot {id}"), |x| {
        let m = read_manifest(x, env, server, id)?;
        check_stream(x, env, server, &m, None)?;
        Ok(m)
    })?;
    let st = Steps {
        env,
        server: server.to_string(),
    };
    let probe = x.run_step(&st.probe())?;
    let c = crate::compose::Compose::parse(deploy::field(&probe.stdout, "compose"))
        .context("no compose on the server")?;
    let holder = serde_json::json!({"id": format!("restore-{id}"), "who": "snapshot restore", "pid": std::process::id(), "version": m.version, "started": now_rfc3339(), "started_epoch": 0});
    let lock = x.exec(&st.lock(&holder))?;
    if !lock.ok {
        return Err(fail(format!(
            "a deploy lock is held ({}): refusing to restore; see `cargo xtask lock status`",
            lock.stdout.lines().next().unwrap_or("").trim()
        )));
    }
    let undo = format!(
        ".restore-undo/{}-before-{id}",
        now_rfc3339().replace(['-', ':'], "")
    );
    let r = (|| -> Result<()> {
        x.run_step(&st.stop(c))?;
        let r = sh_quote(&env.remote_dir);
        let u = sh_quote(&undo);
        x.run_step(&Step::remote("aside", format!("Move the current state aside to {undo}"), server, format!(
            "cd {r} && mkdir -p {u}/.deploy && for d in config data logs; do [ -e \"$d\" ] && mv \"$d\" {u}/; done; for f in .deploy/history.jsonl .deploy/last_good_tag; do [ -e \"$f\" ] && mv \"$f\" {u}/.deploy/; done; true"
        )))?;
        x.step(&format!("Extract {id}"), |x| {
            check_stream(x, env, server, &m, Some(&env.remote_dir))
        })?;
        for t in &m.partial_tails {
            let p = sh_quote(&format!("{}/{}", env.remote_dir, t.path));
            x.run_step(&Step::remote(
                "tail",
                format!("Cut the partial last line of {}", t.path),
                server,
                format!("truncate -s {} {p}", t.keep_bytes),
            ))?;
        }
        Ok(())
    })();
    let started = r.and_then(|_| {
        if m.version.is_empty() {
            eprintln!("    the snapshot records no running version: not starting anything");
            return Ok(());
        }
        x.run_step(&st.upload_env(deploy::env_file(env, &m.version)?))?;
        let gate = deploy::start_and_gate(x, &st, sh, &m.version, c)?;
        if !gate.failed.is_empty() {
            return Err(fail(format!(
                "restored, but {} failed its health gate: {}",
                m.version,
                gate.failed.join("; ")
            )));
        }
        Ok(())
    });
    let _ = x.run(&st.unlock(&format!("restore-{id}")));
    started.map_err(|e| {
        fail(format!(
            "{e:#}\nthe state before the restore is kept in {}/{undo}",
            env.remote_dir
        ))
    })?;
    eprintln!(
        "restored {id}; the state before it is kept in {}/{undo}",
        env.remote_dir
    );
    Ok(undo)
}

fn confirm(id: &str, yes: bool) -> Result<()> {
    use std::io::IsTerminal;
    if yes {
        return Ok(());
    }
    if !io::stdin().is_terminal() {
        return Err(usage(
            "restore replaces the server's state: pass --yes when not interactive",
        ));
    }
    eprint!(
        "restore {id}: the service stops and the current state is moved aside. Continue? [y/N] "
    );
    let mut line = String::new();
    io::stdin().read_line(&mut line)?;
    if line.trim().eq_ignore_ascii_case("y") {
        Ok(())
    } else {
        Err(fail("restore cancelled"))
    }
}

impl Snapshot {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        match &self.cmd {
            SnapshotCmd::Verify { id }
            | SnapshotCmd::Restore { id, .. }
            | SnapshotCmd::Download { id, .. } => validate_id(id)?,
            _ => {}
        }
        if let SnapshotCmd::Restore { id, yes } = &self.cmd {
            confirm(id, *yes)?;
        }
        let (mut x, server) = deploy::connect(sh, &env, false)?;
        let s = server.name.clone();
        match self.cmd {
            SnapshotCmd::Create { no_logs } => {
                let probe = x.run_step(
                    &Steps {
                        env: &env,
                        server: s.clone(),
                    }
                    .probe(),
                )?;
                let version = deploy::tag_of(deploy::field(&probe.stdout, "running"));
                let m = x.step("Create the snapshot", |x| {
                    create(x, &env, &s, &version, no_logs)
                })?;
                if self.json {
                    println!(
                        "{}",
                        serde_json::json!({"id": m.id, "size": m.archive.size, "sha256": m.archive.sha256, "entries": m.entries.len(), "version": m.version})
                    );
                } else {
                    println!(
                        "snapshot {} ({} bytes, {} entries, sha256 {})",
                        m.id,
                        m.archive.size,
                        m.entries.len(),
                        m.archive.sha256
                    );
                }
            }
            SnapshotCmd::List => {
                let v = list(&mut x, &env, &s)?;
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    for l in &v {
                        println!(
                            "{:<28} {:<10} {:>12}  {}  {}",
                            l.id, l.state, l.size, l.created, l.version
                        );
                    }
                }
            }
            SnapshotCmd::Verify { id } => {
                x.step(&format!("Verify snapshot {id}"), |x| {
                    let m = read_manifest(x, &env, &s, &id)?;
                    check_stream(x, &env, &s, &m, None)
                })?;
                println!("snapshot {id}: valid");
            }
            SnapshotCmd::Restore { id, .. } => {
                let undo = restore(sh, &mut x, &env, &s, &id)?;
                if self.json {
                    println!(
                        "{}",
                        serde_json::json!({"id": id, "undo": format!("{}/{undo}", env.remote_dir)})
                    );
                }
            }
            SnapshotCmd::Prune { keep } => {
                let keep = keep.unwrap_or(env.cfg.keep_snapshots as usize).max(1);
                let v = list(&mut x, &env, &s)?;
                let valid: Vec<&Listed> = v.iter().filter(|l| l.state == "valid").collect();
                let doomed: Vec<String> = valid
                    .iter()
                    .rev()
                    .skip(keep)
                    .map(|l| l.id.clone())
                    .collect();
                if !doomed.is_empty() {
                    let files: Vec<String> = doomed
                        .iter()
                        .flat_map(|id| list_files(&env, id))
                        .map(|f| sh_quote(&f))
                        .collect();
                    x.run_step(&Step::remote(
                        "prune",
                        format!("Delete {} old snapshot(s)", doomed.len()),
                        &s,
                        format!("rm -f {}", files.join(" ")),
                    ))?;
                }
                println!(
                    "kept {} valid snapshot(s), deleted {}",
                    valid.len() - doomed.len(),
                    doomed.len()
                );
            }
            SnapshotCmd::Download { id, to } => {
                let m = read_manifest(&mut x, &env, &s, &id)?;
                std::fs::create_dir_all(&to)?;
                for f in [
                    m.archive.file.clone(),
                    format!("{}.sha256", m.archive.file),
                    format!("{id}.manifest.json"),
                ] {
                    let mut child = x
                        .session(&s)?
                        .command(&format!("cat {}/{}", backups(&env), sh_quote(&f)), false)?
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()?;
                    let mut out = Hashing::new(std::fs::File::create(to.join(&f))?);
                    io::copy(child.stdout.as_mut().context("stdout")?, &mut out)?;
                    wait_ok(&mut child, "cat")?;
                    let (_, sha, _) = out.finish();
                    if f == m.archive.file && sha != m.archive.sha256 {
                        return Err(fail(format!(
                            "downloaded {f} has sha256 {sha}, the manifest says {}",
                            m.archive.sha256
                        )));
                    }
                }
                println!("downloaded {id} to {}", to.display());
            }
        }
        Ok(())
    }
}

fn list_files(env: &Env, id: &str) -> Vec<String> {
    vec![
        format!("{}/{id}.tar.zst", env.backups_dir),
        format!("{}/{id}.tar.zst.sha256", env.backups_dir),
        format!("{}/{id}.manifest.json", env.backups_dir),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_entries_are_refused() {
        assert!(check_entry("config/observer/observer.jsonl", "file", None).is_ok());
        assert!(check_entry("config", "dir", None).is_ok());
        assert!(check_entry("config/a/link", "symlink", Some("../b")).is_ok());
        for (p, k, l) in [
            ("../evil", "file", None),
            ("config/../../evil", "file", None),
            ("/etc/passwd", "file", None),
            ("config/etc", "symlink", Some("/etc")),
            ("config/x", "symlink", Some("../../outside")),
            ("config/h", "hardlink", Some("../outside")),
            ("config/h", "hardlink", Some("/etc/shadow")),
            ("dev/null", "char-device", None),
            ("fifo", "fifo", None),
        ] {
            assert!(check_entry(p, k, l).is_err(), "{p} {k} {l:?}");
        }
    }

    #[test]
    fn ids() {
        assert!(validate_id("20261128T212800Z-a1b2c3").is_ok());
        for bad in ["", "../x", "a b", "$(id)", "-x", ".hidden", "a/b"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashing_round_trip() {
        let mut h = Hashing::new(Vec::new());
        h.write_all(b"abc").unwrap();
        let (v, sha, n) = h.finish();
        assert_eq!(v, b"abc");
        assert_eq!(n, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

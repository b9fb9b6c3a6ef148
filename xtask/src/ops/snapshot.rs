//! Snapshot operations over the one SSH connection (contract §1 "tar backup", §7 "check the data
//! volume"). The server runs only `sh`, `tar` and `cat`; the xtask parses the tar stream (hashing
//! each entry), compresses it with multi-threaded zstd and hashes the result on the way back into
//! the server's backups folder. Memory stays bounded: nothing is buffered whole. The manifest is
//! written last, atomically: without it a snapshot is incomplete. Streams are `duct` pipes.

use super::steps::Steps;
use crate::config::Env;
use crate::core::exit::fail;
use crate::core::util::{hex, now_rfc3339, random_hex};
use crate::ctx::Ctx;
use crate::plan::{Executor, Step};
use crate::server;
use crate::server::snapshot::{
    self as ss, check_entry, ArchiveInfo, Entry, Listed, Manifest, PartialTail,
};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

fn new_id() -> Result<String> {
    let t = now_rfc3339().replace(['-', ':'], "");
    Ok(format!("{t}-{}", random_hex(3)?))
}

/// Copies everything read from `r` into `w` on the way through.
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

/// Hashes (sha256) and counts what passes through, in either direction.
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
    /// (inner, lowercase hex sha256, bytes).
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

/// Walks a tar stream: checks each entry (refusing unsafe ones), hashes each file, and hands
/// `each` the entry with the last byte of its content.
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

/// Waits for a started remote process; fails with its stderr when it failed.
fn wait_ok(h: &duct::Handle, what: &str) -> Result<()> {
    let out = h.wait()?;
    if !out.status.success() {
        bail!(
            "{what} failed on the server: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A remote writer: a process whose stdin is the returned pipe.
fn writer(
    x: &mut Executor,
    server: &str,
    script: &str,
) -> Result<(duct::Handle, os_pipe::PipeWriter)> {
    let (r, w) = os_pipe::pipe().context("creating a pipe")?;
    let h = x
        .stream(server, script, true)?
        .stdin_file(r)
        .stdout_null()
        .stderr_capture()
        .start()
        .context("starting the remote writer")?;
    Ok((h, w))
}

/// A remote reader: a process whose stdout is read here (stderr captured).
fn reader(x: &mut Executor, server: &str, script: &str) -> Result<duct::ReaderHandle> {
    x.stream(server, script, false)?
        .stderr_capture()
        .reader()
        .context("starting the remote reader")
}

/// After a reader hit EOF: fails with its stderr when the remote process failed.
fn reader_ok(r: &duct::ReaderHandle, what: &str) -> Result<()> {
    if let Some(out) = r.try_wait()? {
        if !out.status.success() {
            bail!(
                "{what} failed on the server: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Takes a snapshot over `x`'s session to `server`. Used by `snapshot create` and by `deploy`.
pub fn create(
    x: &mut Executor,
    env: &Env,
    server: &str,
    version: &str,
    no_logs: bool,
) -> Result<Manifest> {
    let id = new_id()?;
    let file = format!("{id}.tar.zst");
    let partial = format!("{file}.partial");
    let src = reader(x, server, &ss::tar(env, no_logs))?;
    let (dst, sink) = writer(x, server, &ss::write_partial(env, &partial))?;
    let result = (|| -> Result<(Vec<Entry>, Vec<PartialTail>, String, u64)> {
        let sink = io::BufWriter::with_capacity(256 * 1024, sink);
        let mut enc = zstd::stream::write::Encoder::new(Hashing::new(sink), 3)?;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        enc.multithread(threads)?;
        let mut entries = Vec::new();
        let mut tails = Vec::new();
        {
            let tee = Tee {
                r: &src,
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
        reader_ok(&src, "tar")?;
        wait_ok(&dst, "writing the snapshot (disk full?)")?;
        Ok(r)
    });
    let (entries, mut tails, sha, size) = match streamed {
        Ok(r) => r,
        Err(e) => {
            let _ = src.kill();
            let _ = dst.kill();
            let _ = dst.wait();
            let _ = x.run(&Step::remote(
                "snapshot-cleanup",
                "Remove the partial snapshot",
                server,
                ss::remove_partial(env, &partial),
            ));
            return Err(fail(format!(
                "snapshot failed, the partial file was removed: {e:#}"
            )));
        }
    };
    // Where a JSON-lines file was caught mid-append, keep everything up to its last newline.
    for t in &mut tails {
        t.keep_bytes = last_newline(
            x,
            server,
            &format!("{}/{partial}", env.backups_dir),
            &t.path,
        )?;
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
    let step = Step::remote(
        "snapshot-finish",
        "Write the checksum and the manifest (last)",
        server,
        ss::finish(env, &id, &partial, &file, &sha),
    )
    .data_stdin(serde_json::to_vec(&manifest)?);
    x.run(&step)?;
    Ok(manifest)
}

/// For a partially captured JSON-lines file: the length up to its last newline, found by
/// streaming the just-written snapshot's entry (never the live file).
fn last_newline(x: &mut Executor, server: &str, archive: &str, path: &str) -> Result<u64> {
    let src = reader(x, server, &format!("cat {}", server::q(archive)))?;
    let dec = zstd::stream::read::Decoder::new(&src)?;
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
    let _ = src.kill();
    Ok(keep)
}

/// The manifest of snapshot `id` (exit 1 naming it when absent).
pub fn read_manifest(x: &mut Executor, env: &Env, server: &str, id: &str) -> Result<Manifest> {
    let out = x.exec(
        &Step::remote(
            "manifest",
            "Read the manifest",
            server,
            ss::cat(env, &format!("{id}.manifest.json")),
        )
        .read_only(),
    )?;
    if !out.ok {
        return Err(fail(format!("snapshot {id}: no manifest on {server} (unknown or incomplete snapshot; see `snapshot list`)")));
    }
    serde_json::from_str(&out.stdout).with_context(|| format!("parsing the manifest of {id}"))
}

/// Streams the archive from the server, checks every entry (safety first) against the manifest,
/// and the archive's sha256. With `extract`, the verified tar stream is also fed to `tar -x` in
/// that folder on the server.
pub fn check_stream(
    x: &mut Executor,
    env: &Env,
    server: &str,
    m: &Manifest,
    extract: Option<&str>,
) -> Result<()> {
    let src = reader(x, server, &ss::cat(env, &m.archive.file))?;
    let mut dst = match extract {
        Some(dir) => Some(writer(x, server, &ss::extract(dir))?),
        None => None,
    };
    let hashed = Hashing::new(&src);
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
            Some((_, sink)) => {
                let tee = Tee { r: dec, w: sink };
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
        reader_ok(&src, "reading the archive")
    })();
    let _ = src.kill();
    if let Some((h, sink)) = dst {
        drop(sink);
        if outcome.is_err() {
            let _ = h.kill();
        }
        let r = wait_ok(&h, "tar -x");
        outcome?;
        r?;
        return Ok(());
    }
    outcome
}

/// Every snapshot in the backups folder with its state.
pub fn list(x: &mut Executor, env: &Env, server: &str) -> Result<Vec<Listed>> {
    let out = x.run(&Step::remote("list", "List snapshots", server, ss::list(env)).read_only())?;
    Ok(ss::parse_list(env, &out.stdout))
}

/// Copies one file of the backups folder to `to`, returning its sha256.
pub fn download(
    x: &mut Executor,
    env: &Env,
    server: &str,
    name: &str,
    to: &std::path::Path,
) -> Result<String> {
    let src = reader(x, server, &ss::cat(env, name))?;
    let mut out = Hashing::new(std::fs::File::create(to)?);
    io::copy(&mut &src, &mut out)?;
    reader_ok(&src, "cat")?;
    let (_, sha, _) = out.finish();
    Ok(sha)
}

/// Restores snapshot `id`: verify, lock, stop, move aside, extract, cut partial tails, start the
/// recorded version behind the health gate. Returns the folder the replaced state was moved to
/// (relative to the deploy root).
pub fn restore(sh: &Ctx, x: &mut Executor, env: &Env, server: &str, id: &str) -> Result<String> {
    let m = x.step(&format!("Verify snapshot {id}"), |x| {
        let m = read_manifest(x, env, server, id)?;
        check_stream(x, env, server, &m, None)?;
        Ok(m)
    })?;
    let st = Steps::new(env, server);
    let probe = super::probe(x, &st)?;
    let c = crate::compose::choose(&probe.compose)?;
    let lock_id = format!("restore-{id}");
    let holder =
        crate::core::liveness::holder(lock_id.clone(), "restore", super::who(), &m.version);
    let lock = x.exec(&st.lock(&holder))?;
    if !lock.ok {
        return Err(fail(format!(
            "a deploy lock is held ({}): refusing to restore; see `cargo xtask lock status`",
            lock.stdout.lines().next().unwrap_or("").trim()
        )));
    }
    // From here on a signal never stops the restore between its steps: once the service
    // stops, only a started service (or a failure saying it is down) is a safe end.
    x.interruptible = false;
    let stop_here = |x: &mut Executor, before: &str| -> Result<()> {
        match crate::core::signals::pending() {
            Some(sig) => {
                let _ = x.run(&st.unlock(&lock_id));
                Err(crate::plan::interrupted(sig, before))
            }
            None => Ok(()),
        }
    };
    let undo = format!(
        ".restore-undo/{}-before-{id}",
        now_rfc3339().replace(['-', ':'], "")
    );
    // The recorded version's image must be here BEFORE anything stops (it may have been pruned).
    stop_here(x, "pull")?;
    if !m.version.is_empty() {
        let creds = crate::registry::credentials(sh, env);
        if let Err(e) = x.run_step(&st.pull(&m.version, creds.as_ref())) {
            let _ = x.run(&st.unlock(&lock_id));
            return Err(fail(format!(
                "{e:#}\n{} cannot be pulled: nothing was stopped or changed",
                env.image(&m.version)
            )));
        }
    }
    stop_here(x, "Stop the service")?;
    let r = (|| -> Result<()> {
        x.run_step(&st.stop(c))?;
        x.run_step(&Step::remote(
            "aside",
            format!("Move the current state aside to {undo}"),
            server,
            ss::move_aside(env, &undo),
        ))?;
        x.step(&format!("Extract {id}"), |x| {
            check_stream(x, env, server, &m, Some(&env.remote_dir))
        })?;
        for t in &m.partial_tails {
            x.run_step(&Step::remote(
                "tail",
                format!("Cut the partial last line of {}", t.path),
                server,
                ss::cut_tail(env, t),
            ))?;
        }
        Ok(())
    })();
    let started = r.and_then(|_| {
        if m.version.is_empty() {
            eprintln!("    the snapshot records no running version: not starting anything");
            return Ok(());
        }
        x.run_step(&st.upload_env(super::env_text(sh, env, &m.version)?))?;
        let gate = super::start_and_gate(x, &st, &m.version, c)?;
        if !gate.passed() {
            return Err(fail(format!(
                "restored, but {} failed its health gate: {}",
                m.version,
                gate.failed.join("; ")
            )));
        }
        Ok(())
    });
    let _ = x.run(&st.unlock(&lock_id));
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
    if let Some(sig) = crate::core::signals::pending() {
        return Err(crate::core::exit::exit_code(
            format!(
                "interrupted by {} during the restore: the restore was finished and {} runs; the lock is released",
                crate::core::signals::name(sig),
                m.version
            ),
            crate::core::signals::exit_code(sig),
        ));
    }
    Ok(undo)
}

#[cfg(test)]
mod tests {
    use super::*;

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

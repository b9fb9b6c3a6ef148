//! The snapshot streamed through the controller (issue 13's fallback, and every snapshot made
//! before it): the server runs only `sh`, `tar` and `cat`; the xtask parses the tar stream
//! (hashing each entry), compresses it with multi-threaded zstd and hashes the result on the way
//! back into the server's backups folder. Memory stays bounded: nothing is buffered whole.
//! Streams are `duct` pipes. `download` also streams (only when asked).

use crate::config::Env;
use crate::core::exit::fail;
use crate::core::util::{hex, now_rfc3339};
use crate::plan::{Executor, Step};
use crate::server;
use crate::server::snapshot::{
    self as ss, check_entry, Access, ArchiveInfo, Entry, Manifest, PartialTail,
};
use crate::server::snapshot_remote as sr;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

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
pub fn walk<R: Read>(r: R, mut each: impl FnMut(Entry, Option<u8>) -> Result<()>) -> Result<R> {
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

/// Takes snapshot `id` by streaming over `x`'s session to `server` (the fallback of
/// `ops::snapshot::create`, and `snapshot create --stream`); the server's tar runs as `access`
/// says.
pub fn create(
    x: &mut Executor,
    env: &Env,
    server: &str,
    id: &str,
    version: &str,
    no_logs: bool,
    access: &Access,
) -> Result<Manifest> {
    let file = format!("{id}.tar.zst");
    let partial = format!("{file}.partial");
    let src = reader(x, server, &ss::tar(env, no_logs, access))?;
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
            remove_partial(x, env, server, &partial);
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
    let made = Made {
        id,
        partial: &partial,
        version,
        no_logs,
        size,
        sha256: &sha,
        entries,
        partial_tails: tails,
        delta: Default::default(),
        state: None,
    };
    write_manifest(x, env, server, made)
}

/// Removes the partial archive after a failure (best effort: a failure to remove it is left to
/// `snapshot prune`, which removes partial files idle for the lock TTL).
pub fn remove_partial(x: &mut Executor, env: &Env, server: &str, partial: &str) {
    let _ = x.run(&Step::remote(
        "snapshot-cleanup",
        "Remove the partial snapshot",
        server,
        ss::remove_partial(env, partial),
    ));
}

/// What a snapshot's manifest records, however it was made.
pub struct Made<'a> {
    pub id: &'a str,
    /// `ID.tar.zst.partial`, renamed by [`write_manifest`].
    pub partial: &'a str,
    pub version: &'a str,
    pub no_logs: bool,
    /// The archive's bytes and lowercase hex sha256.
    pub size: u64,
    pub sha256: &'a str,
    pub entries: Vec<Entry>,
    pub partial_tails: Vec<PartialTail>,
    /// The incremental part (default: a full snapshot) and the state recorded for the next one.
    pub delta: crate::server::snapshot::Delta,
    pub state: Option<Vec<crate::server::snapshot::FileState>>,
}

/// Renames the partial archive, writes its `.sha256` and then `ID.manifest.json` (last, by
/// rename): the same records whether the snapshot was streamed or made on the server.
pub fn write_manifest(x: &mut Executor, env: &Env, server: &str, m: Made) -> Result<Manifest> {
    let file = format!("{}.tar.zst", m.id);
    let manifest = Manifest {
        id: m.id.to_string(),
        created: now_rfc3339(),
        env: env.name.clone(),
        server: server.to_string(),
        version: m.version.to_string(),
        no_logs: m.no_logs,
        archive: ArchiveInfo {
            file: file.clone(),
            size: m.size,
            sha256: m.sha256.to_string(),
        },
        entries: m.entries,
        partial_tails: m.partial_tails,
        delta: m.delta,
        state: m.state,
    };
    let step = Step::remote(
        "snapshot-finish",
        "Write the checksum and the manifest (last)",
        server,
        ss::finish(env, m.id, m.partial, &file, m.sha256),
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

/// Streams the archive from the server, checks every entry (safety first) against the manifest,
/// and the archive's sha256. With `extract` (a folder and how to reach it), the verified tar
/// stream is also fed to `tar -x` in that folder on the server.
pub fn check_stream(
    x: &mut Executor,
    env: &Env,
    server: &str,
    m: &Manifest,
    extract: Option<(&str, &Access)>,
) -> Result<()> {
    let src = reader(x, server, &ss::cat(env, &m.archive.file))?;
    let mut dst = match extract {
        Some((dir, access)) => Some(writer(x, server, &ss::extract(dir, access))?),
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

/// Reads `file` of the backups folder back on the server ([`sr::read_back`]): an unsafe entry
/// fails naming it ("unsafe archive entry"), as does a failed or incomplete reply.
pub fn read_back(x: &mut Executor, env: &Env, server: &str, file: &str) -> Result<sr::ReadBack> {
    let out = x.exec(
        &Step::remote(
            "snapshot-read-back",
            format!("Hash every entry of {file} on the server"),
            server,
            sr::read_back(env, file),
        )
        .read_only(),
    )?;
    reply(&out, file, server)
}

/// [`sr::read_back`]'s reply (or `sr::create`'s, the same) as a [`sr::ReadBack`]: an unsafe
/// entry fails naming it ("unsafe archive entry"), as does a failed or incomplete reply.
pub fn reply(out: &crate::ctx::Output, file: &str, server: &str) -> Result<sr::ReadBack> {
    match sr::parse_read_back(&out.stdout) {
        Err(Ok(unsafe_entry)) => Err(fail(format!(
            "unsafe archive entry: {unsafe_entry}; nothing was extracted"
        ))),
        _ if !out.ok => Err(fail(format!(
            "reading {file} failed on {server}: {}",
            out.stderr.trim()
        ))),
        Err(Err(e)) => Err(e.context(format!("reading {file} on {server}"))),
        Ok(rb) => Ok(rb),
    }
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

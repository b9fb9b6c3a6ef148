//! A reader for the small YAML subset our compose files use (block mappings, block sequences of
//! scalars, flow sequences kept as text, comments). Enough to check the compose contract from the
//! file itself without a YAML dependency; anything else is reported, not guessed.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Scalar(String),
    Seq(Vec<Node>),
    Map(BTreeMap<String, Node>),
}

impl Node {
    /// `a.b.c` lookup through mappings.
    pub fn get(&self, path: &str) -> Option<&Node> {
        path.split('.').try_fold(self, |n, k| match n {
            Node::Map(m) => m.get(k),
            _ => None,
        })
    }
    pub fn str(&self, path: &str) -> Option<&str> {
        match self.get(path)? {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }
    pub fn seq_strs(&self, path: &str) -> Vec<String> {
        match self.get(path) {
            Some(Node::Seq(v)) => v
                .iter()
                .filter_map(|n| match n {
                    Node::Scalar(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

fn strip_comment(line: &str) -> &str {
    let mut in_s = false;
    let mut in_d = false;
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !in_d => in_s = !in_s,
            '"' if !in_s => in_d = !in_d,
            '#' if !in_s && !in_d && (i == 0 || line[..i].ends_with(' ')) => return &line[..i],
            _ => {}
        }
    }
    line
}

pub fn parse(text: &str) -> Result<Node, String> {
    let lines: Vec<(usize, String)> = text
        .lines()
        .map(strip_comment)
        .filter(|l| !l.trim().is_empty())
        .map(|l| (l.len() - l.trim_start().len(), l.trim().to_string()))
        .collect();
    let mut pos = 0;
    let node = block(&lines, &mut pos, 0)?;
    if pos != lines.len() {
        return Err(format!("unexpected indentation at `{}`", lines[pos].1));
    }
    Ok(node)
}

fn block(lines: &[(usize, String)], pos: &mut usize, indent: usize) -> Result<Node, String> {
    if *pos >= lines.len() {
        return Ok(Node::Scalar(String::new()));
    }
    let is_seq = lines[*pos].1.starts_with("- ") || lines[*pos].1 == "-";
    if is_seq {
        let mut items = Vec::new();
        while *pos < lines.len() && lines[*pos].0 == indent && lines[*pos].1.starts_with('-') {
            let item = lines[*pos].1[1..].trim().to_string();
            *pos += 1;
            if item.contains(": ") || item.ends_with(':') {
                return Err(format!(
                    "mappings inside sequences are not supported: `{item}`"
                ));
            }
            items.push(Node::Scalar(unquote(&item)));
        }
        return Ok(Node::Seq(items));
    }
    let mut map = BTreeMap::new();
    while *pos < lines.len() && lines[*pos].0 == indent {
        let line = lines[*pos].1.clone();
        let (key, rest) = match line.find(": ") {
            Some(i) => (line[..i].to_string(), line[i + 2..].trim().to_string()),
            None if line.ends_with(':') => (line[..line.len() - 1].to_string(), String::new()),
            None => return Err(format!("expected `key: value` at `{line}`")),
        };
        *pos += 1;
        let value = if rest.is_empty() {
            if *pos < lines.len() && lines[*pos].0 > indent {
                let child = lines[*pos].0;
                block(lines, pos, child)?
            } else if *pos < lines.len()
                && lines[*pos].0 == indent
                && lines[*pos].1.starts_with("- ")
            {
                block(lines, pos, indent)?
            } else {
                Node::Scalar(String::new())
            }
        } else {
            Node::Scalar(unquote(&rest))
        };
        map.insert(unquote(&key), value);
    }
    Ok(Node::Map(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_server_compose_file() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../app/obs_deploy/docker-compose.server.yml"),
        )
        .unwrap();
        let doc = parse(&text).unwrap();
        let svc = "services.qts-observer";
        assert!(doc
            .str(&format!("{svc}.image"))
            .unwrap()
            .contains("${IMAGE_TAG:?IMAGE_TAG required}"));
        assert_eq!(
            doc.str(&format!("{svc}.deploy.resources.limits.cpus")),
            Some("1.0")
        );
        assert_eq!(
            doc.str(&format!("{svc}.deploy.resources.reservations.memory")),
            Some("256M")
        );
        assert_eq!(doc.seq_strs(&format!("{svc}.volumes")).len(), 3);
        assert_eq!(
            doc.str(&format!("{svc}.container_name")),
            Some("qts-observer")
        );
    }

    #[test]
    fn comments_and_quotes() {
        let doc =
            parse("a:\n  b: \"x # not a comment\" # comment\n  c:\n  - '1'\n  - 2\n").unwrap();
        assert_eq!(doc.str("a.b"), Some("x # not a comment"));
        assert_eq!(doc.seq_strs("a.c"), vec!["1", "2"]);
    }
}

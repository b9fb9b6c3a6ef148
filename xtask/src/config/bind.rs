//! `bind_address` (issue 15): the host address the observer's port is published on.

use super::EnvConfig;

impl EnvConfig {
    fn bind_ip(&self) -> std::net::IpAddr {
        self.bind_address
            .parse()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    }
    /// `bind_address` as compose's port syntax wants it (`OBSERVER_BIND_ADDRESS`): an IPv6
    /// address in brackets (`[::1]`), an IPv4 one as it is.
    pub fn bind_for_compose(&self) -> String {
        match self.bind_ip() {
            std::net::IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        }
    }
    /// The host to ask for the published port from the server itself (the health gate's
    /// `curl`): the bound address, or the loopback of its family when it binds all addresses.
    pub fn local_http_host(&self) -> String {
        match self.bind_ip() {
            std::net::IpAddr::V4(a) if a.is_unspecified() => "127.0.0.1".into(),
            std::net::IpAddr::V6(a) if a.is_unspecified() => "[::1]".into(),
            std::net::IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn real() -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(CONFIG_PATH),
        )
        .unwrap()
    }

    #[test]
    fn bind_address_is_an_ip_address_defaulting_to_loopback() {
        let cfg = parse(&real(), CONFIG_PATH).unwrap();
        let sandbox = &cfg.environments["sandbox"];
        assert_eq!(sandbox.bind_address, "127.0.0.1");
        assert_eq!(sandbox.bind_for_compose(), "127.0.0.1");
        assert_eq!(sandbox.local_http_host(), "127.0.0.1");
        let mut c = sandbox.clone();
        for (addr, compose, local) in [
            ("0.0.0.0", "0.0.0.0", "127.0.0.1"),
            ("10.0.0.4", "10.0.0.4", "10.0.0.4"),
            ("::1", "[::1]", "[::1]"),
            ("::", "[::]", "[::1]"),
        ] {
            c.bind_address = addr.into();
            assert_eq!(c.bind_for_compose(), compose);
            assert_eq!(c.local_http_host(), local);
        }
        for bad in ["localhost", "127.0.0.1:80", "$(reboot)", "[::1]", ""] {
            let text = real().replacen(
                "\"bind_address\": \"127.0.0.1\"",
                &format!("\"bind_address\": {bad:?}"),
                1,
            );
            let msg = parse(&text, "f.json").unwrap_err().to_string();
            assert!(
                msg.contains("environments.production.bind_address"),
                "{msg}"
            );
        }
    }
}

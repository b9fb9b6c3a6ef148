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

//! `[[network]]` tables: the secondary cluster's networks a recovered VM can be
//! attached to. Plans map production networks onto them; a drill only ever onto
//! `isolated` ones.
//!
//! ```toml
//! [[network]]
//! name = "dr-lan"
//! kind = "bridge"                  # "bridge" (+ bridge = "br-dr"), "tap" (+ tap = "tap0"),
//! bridge = "br-dr"                 # or "user" (QEMU user networking; NAT)
//! [[network]]
//! name = "drill-isolated"
//! kind = "user"
//! isolated = true                  # no route out; required for a plan's test network
//! ```

use std::collections::HashMap;

use toml::Spanned;

use super::raw::RawNetwork;
use super::validator::Validator;

/// How QEMU attaches a NIC to the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkKind {
    /// A host bridge, e.g. `br-dr`.
    Bridge(String),
    /// An existing tap device, e.g. `tap0`.
    Tap(String),
    /// QEMU user networking (NAT through the host).
    User,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub kind: NetworkKind,
    /// Has no route out: the only kind a drill may attach VMs to.
    pub isolated: bool,
}

impl Validator<'_> {
    pub(super) fn networks(&mut self, raw: &[Spanned<RawNetwork>]) -> Vec<Network> {
        let mut names = HashMap::new();
        let mut networks = Vec::new();
        for n in raw {
            let n = n.get_ref();
            self.name(&n.name, "network.name", "network", &mut names);
            let ctx = format!("network {:?}: ", n.name.get_ref());
            if let Some(kind) = self.network_kind(n, &ctx) {
                networks.push(Network {
                    name: n.name.get_ref().clone(),
                    kind,
                    isolated: n.isolated.as_ref().is_some_and(|i| *i.get_ref()),
                });
            }
        }
        networks
    }

    /// The kind and its one device key; a device key of another kind is a mistake.
    fn network_kind(&mut self, n: &RawNetwork, ctx: &str) -> Option<NetworkKind> {
        let kinds = [("bridge", &n.bridge), ("tap", &n.tap), ("user", &None)];
        let choices: Vec<(&str, usize)> = kinds.iter().enumerate().map(|(i, k)| (k.0, i)).collect();
        let kind = self.choice(&n.kind, "network.kind", ctx, &choices)?;
        let mut ok = true;
        for (i, (key, value)) in kinds.iter().enumerate() {
            if let (true, Some(v)) = (i != kind, value) {
                self.problem(
                    v.span().start,
                    &format!("network.{key}"),
                    format!(
                        "{ctx}{key} has no effect with kind = {:?}; remove it or set kind = \"{key}\"",
                        n.kind.get_ref()
                    ),
                );
                ok = false;
            }
        }
        let (key, device) = kinds[kind];
        let device = device.as_ref().map(|d| d.get_ref().clone());
        if key != "user" && device.is_none() {
            self.problem(
                n.kind.span().start,
                "network.kind",
                format!(
                    "{ctx}kind = \"{key}\" needs {key} = \"<device>\", e.g. {key} = \"{key}0\""
                ),
            );
            return None;
        }
        match (ok, key, device) {
            (false, ..) => None,
            (true, "bridge", Some(d)) => Some(NetworkKind::Bridge(d)),
            (true, "tap", Some(d)) => Some(NetworkKind::Tap(d)),
            _ => Some(NetworkKind::User),
        }
    }
}

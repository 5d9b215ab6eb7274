//! Where each process listens, and network partitions between them.
//!
//! With `Namespaces` (needs root and `ip` from iproute2), every process runs in its own
//! network namespace with one veth into a bridge in the caller's namespace, so clients reach
//! everyone while a partition cuts chosen pairs: a blackhole route to each peer on the
//! other side, in both namespaces. Without root, `Loopback` gives each process its own
//! 127.x address and no partitions.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, bail};

use crate::schedule::Proc;

/// The bridge's subnet is `10.213.X.0/24` for a free X; the caller's side is `.1`,
/// processes from `.10` up.
const SUBNET_PREFIX: [u8; 2] = [10, 213];
const LOOPBACK_NET: [u8; 3] = [127, 0, 213];
const FIRST_HOST: u8 = 10;

pub enum Network {
    Namespaces(Namespaces),
    Loopback { masters: usize },
}

pub struct Namespaces {
    /// Distinguishes this run's interfaces and namespaces from another run's.
    tag: String,
    masters: usize,
    procs: usize,
    /// Blackhole routes in place: (namespace of, peer).
    cut: BTreeSet<(Proc, Proc)>,
    subnet: [u8; 3],
}

impl Network {
    /// Namespaces when this process may create them, else loopback addresses.
    pub fn create(masters: usize, nodes: usize, want_partitions: bool) -> anyhow::Result<Network> {
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            if want_partitions {
                bail!(
                    "the partition nemesis needs root (it puts every process in its own network namespace); run as root or leave out partition"
                );
            }
            return Ok(Network::Loopback { masters });
        }
        let tag = format!("{:05}", std::process::id() % 100_000);
        let subnet = free_subnet()?;
        let ns = Namespaces { tag, masters, procs: masters + nodes, cut: BTreeSet::new(), subnet };
        ns.teardown();
        ns.setup().inspect_err(|_| ns.teardown())?;
        Ok(Network::Namespaces(ns))
    }

    pub fn ip(&self, p: Proc) -> Ipv4Addr {
        match self {
            Network::Namespaces(ns) => host(ns.subnet, ns.index(p)),
            Network::Loopback { masters } => host(LOOPBACK_NET, index(*masters, p)),
        }
    }

    /// The address the clients (this process) use to reach a service that listens on
    /// 127.0.0.1 here (the moto server of the AWS backend): `None` when processes share
    /// this network already.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        match self {
            Network::Namespaces(ns) => Some(Ipv4Addr::new(ns.subnet[0], ns.subnet[1], ns.subnet[2], 1)),
            Network::Loopback { .. } => None,
        }
    }

    /// The command that runs `exe` as process `p`.
    pub fn command(&self, p: Proc, exe: &std::path::Path) -> Command {
        match self {
            Network::Namespaces(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &ns.netns(p)]).arg(exe);
                cmd
            }
            Network::Loopback { .. } => Command::new(exe),
        }
    }

    pub fn partition(&mut self, a: &[Proc], b: &[Proc]) -> anyhow::Result<()> {
        let Network::Namespaces(ns) = self else { bail!("partitions need network namespaces (root)") };
        for &x in a {
            for &y in b {
                for (from, to) in [(x, y), (y, x)] {
                    if ns.cut.insert((from, to)) {
                        ns.route(from, to, "add")?;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn heal(&mut self) -> anyhow::Result<()> {
        let Network::Namespaces(ns) = self else { return Ok(()) };
        for (from, to) in std::mem::take(&mut ns.cut) {
            ns.route(from, to, "del")?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Network::Namespaces(ns) = self {
            ns.teardown();
        }
    }
}

fn host(net: [u8; 3], i: usize) -> Ipv4Addr {
    Ipv4Addr::new(net[0], net[1], net[2], FIRST_HOST + i as u8)
}

fn index(masters: usize, p: Proc) -> usize {
    match p {
        Proc::Master(i) => i,
        Proc::Node(i) => masters + i,
    }
}

impl Namespaces {
    fn index(&self, p: Proc) -> usize {
        index(self.masters, p)
    }

    fn netns(&self, p: Proc) -> String {
        format!("ampc{}-{}", self.tag, self.index(p))
    }

    fn bridge(&self) -> String {
        format!("acbr{}", self.tag)
    }

    fn veth(&self, i: usize, side: char) -> String {
        format!("ac{}{side}{i}", self.tag)
    }

    fn setup(&self) -> anyhow::Result<()> {
        let br = self.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        let [a, b, c] = self.subnet;
        ip(&["addr", "add", &format!("{}/24", Ipv4Addr::new(a, b, c, 1)), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 0..self.procs {
            let ns = format!("ampc{}-{i}", self.tag);
            let (outer, inner) = (self.veth(i, 'h'), self.veth(i, 'n'));
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &outer, "master", &br, "up"])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns, "ip"];
                all.extend_from_slice(args);
                ip(&all)
            };
            inside(&["link", "set", "lo", "up"])?;
            inside(&["addr", "add", &format!("{}/24", host(self.subnet, i)), "dev", &inner])?;
            inside(&["link", "set", &inner, "up"])?;
        }
        Ok(())
    }

    fn route(&self, from: Proc, to: Proc, verb: &str) -> anyhow::Result<()> {
        let ns = self.netns(from);
        let peer = format!("{}/32", host(self.subnet, self.index(to)));
        ip(&["netns", "exec", &ns, "ip", "route", verb, "blackhole", &peer])
    }

    /// Removes whatever a run with this tag left behind (errors ignored: most is absent).
    fn teardown(&self) {
        for i in 0..self.procs {
            let _ = quiet(&["netns", "del", &format!("ampc{}-{i}", self.tag)]);
            let _ = quiet(&["link", "del", &self.veth(i, 'h')]);
        }
        let _ = quiet(&["link", "del", &self.bridge()]);
    }
}

/// A `10.213.X.0/24` no interface here uses yet (so runs side by side do not collide),
/// starting from one drawn from the pid.
fn free_subnet() -> anyhow::Result<[u8; 3]> {
    let out = Command::new("ip").args(["-4", "addr", "show"]).output().context("running ip (iproute2)")?;
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = (std::process::id() % 250) as u8;
    for k in 0..250u8 {
        let x = first.wrapping_add(k) % 250;
        let [a, b] = SUBNET_PREFIX;
        if !used.contains(&format!("inet {a}.{b}.{x}.")) {
            return Ok([a, b, x]);
        }
    }
    bail!("no free 10.213.X.0/24 subnet for the chaos network")
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn quiet(args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    Command::new("ip").args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status()
}

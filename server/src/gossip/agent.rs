//! The gossip runtime: one task owns `Foca` and is driven by inputs (packets, timers,
//! announces, load updates, a refresh tick, leave); one scheduler task delivers foca's timers
//! in deadline order; one task reads the UDP socket. Everything foca asks to send is sealed
//! (see `seal.rs`) and sent from the owning task.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use foca::{AccumulatingRuntime, Config as FocaConfig, Foca, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use super::identity::MemberId;
use super::meta::{GossipLoad, MemberMeta, MetaHandler, MetaTable};
use super::seal::{OVERHEAD_BYTES, Sealer};
use super::view::{MemberState, MemberView, MembersView};
use crate::metrics::Metrics;
use ampstore_common::error::Error;
use ampstore_common::ids::NodeId;
use ampstore_common::limits::GOSSIP_PACKET_BYTES_MAX;
use ampstore_common::protocol::Role;

/// Packets waiting for the foca task; beyond it packets are dropped (counted).
const INPUT_QUEUE_DEPTH: usize = 1024;

/// What a process gossips and how.
#[derive(Clone, Debug)]
pub struct GossipSettings {
    pub node_id: NodeId,
    pub role: Role,
    /// UDP address to bind (port 0 picks one).
    pub bind_addr: String,
    pub rpc_addr: String,
    pub admin_addr: String,
    pub seeds: Vec<String>,
    pub cluster_size: u64,
    pub suspicion_ms: u64,
    pub refresh_ms: u64,
    pub key: Option<[u8; 32]>,
}

impl GossipSettings {
    /// The settings of a process with `role` from its configuration: the `[gossip]` section,
    /// the cluster key, and the addresses it serves on.
    pub fn from_config(
        cfg: &crate::config::Config,
        node_id: NodeId,
        role: Role,
        bind_addr: &str,
        rpc_addr: &str,
        admin_addr: &str,
    ) -> Result<GossipSettings, Error> {
        Ok(GossipSettings {
            node_id,
            role,
            bind_addr: bind_addr.to_string(),
            rpc_addr: rpc_addr.to_string(),
            admin_addr: admin_addr.to_string(),
            seeds: cfg.gossip.seeds.clone(),
            cluster_size: cfg.gossip.cluster_size,
            suspicion_ms: cfg.gossip.suspicion_ms,
            refresh_ms: cfg.gossip.refresh_ms,
            key: cfg.cluster.gossip_key()?,
        })
    }
}

/// A change in membership, for processes that react to it (the master).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    Up(NodeId),
    Down(NodeId),
}

enum Input {
    Data(Vec<u8>),
    Timer(Timer<MemberId>),
    Load(GossipLoad),
    Refresh,
    Leave(oneshot::Sender<()>),
}

struct Shared {
    view: RwLock<MembersView>,
    events: broadcast::Sender<MemberEvent>,
}

/// A running gossip member. Dropping it does not stop it; call [`Gossip::leave`] on a
/// graceful shutdown.
pub struct Gossip {
    inputs: mpsc::Sender<Input>,
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    me: MemberId,
}

/// foca's configuration for a suspicion budget: a dead member is probed within about two
/// probe periods, fails its direct and indirect probes within one period, and is declared
/// down a quarter of the budget later. That leaves about half of `suspicion_ms` as slack
/// for a loaded machine: a member that misses the `Down` broadcast still reaches the
/// verdict through its own suspect timer (CI once showed exactly that, one suspect window
/// after the others) before `suspicion_ms` is up.
pub fn foca_config(cluster_size: u64, suspicion_ms: u64) -> FocaConfig {
    let size = NonZeroU32::new(cluster_size.clamp(1, u32::MAX as u64) as u32).unwrap_or(NonZeroU32::MIN);
    let mut cfg = FocaConfig::new_lan(size);
    let probe = Duration::from_millis(suspicion_ms / 8);
    cfg.probe_period = probe;
    cfg.probe_rtt = probe / 2;
    cfg.suspect_to_down_after = Duration::from_millis(suspicion_ms / 4);
    cfg.max_packet_size = NonZeroUsize::new(GOSSIP_PACKET_BYTES_MAX - OVERHEAD_BYTES).unwrap_or(NonZeroUsize::MIN);
    if let Some(g) = cfg.periodic_gossip.as_mut() {
        g.frequency = g.frequency.min(probe / 2);
    }
    if let Some(a) = cfg.periodic_announce.as_mut() {
        a.frequency = a.frequency.min(Duration::from_millis(suspicion_ms * 2));
    }
    // After a partition heals, the two sides have each declared the other down and no
    // longer probe it; only an announce to down members brings them back (every renewed
    // identity is then news). foca's LAN default is one member every 65 s, which left
    // the masters taking every node for down for up to a minute after a 5 s partition
    // (chaos seed 2026). Every down member, every suspicion window, costs one packet each.
    if let Some(a) = cfg.periodic_announce_to_down_members.as_mut() {
        a.frequency = Duration::from_millis(suspicion_ms);
        a.num_members = NonZeroUsize::new(cluster_size.clamp(1, u32::MAX as u64) as usize).unwrap_or(NonZeroUsize::MIN);
    }
    cfg
}

impl Gossip {
    pub async fn start(settings: GossipSettings, metrics: Arc<Metrics>) -> Result<Gossip, Error> {
        let socket = UdpSocket::bind(&settings.bind_addr)
            .await
            .map_err(|e| Error::unavailable(format!("cannot bind gossip UDP {}: {e}", settings.bind_addr)))?;
        let local_addr = socket.local_addr().map_err(|e| Error::internal(e.to_string()))?;
        if settings.key.is_none() {
            tracing::warn!(
                "no gossip key configured (cluster.gossip_key): gossip packets are neither authenticated nor encrypted"
            );
        }
        let mut seeds = Vec::new();
        for s in &settings.seeds {
            match tokio::net::lookup_host(s.as_str()).await.ok().and_then(|mut a| a.next()) {
                Some(addr) if addr != local_addr => seeds.push(addr),
                Some(_) => {}
                None => tracing::warn!(seed = %s, "gossip seed does not resolve; ignored"),
            }
        }
        let me = MemberId::starting_now(settings.node_id.clone(), local_addr);
        let socket = Arc::new(socket);
        let (tx, rx) = mpsc::channel(INPUT_QUEUE_DEPTH);
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(Shared { view: RwLock::new(MembersView::default()), events });
        let table = MetaTable::default();
        let cfg = foca_config(settings.cluster_size, settings.suspicion_ms);
        let rng: StdRng = rand::make_rng();
        let foca =
            Foca::with_custom_broadcast(me.clone(), cfg, rng, PostcardCodec, MetaHandler { table: table.clone() });
        let scheduler = start_scheduler(tx.clone());
        let meta = MemberMeta {
            node_id: settings.node_id.clone(),
            bump: me.bump,
            version: 0,
            role: settings.role,
            rpc_addr: settings.rpc_addr.clone(),
            admin_addr: settings.admin_addr.clone(),
            load: GossipLoad::default(),
            leaving: false,
        };
        let owner = Owner {
            foca,
            runtime: AccumulatingRuntime::new(),
            socket: socket.clone(),
            sealer: Sealer::new(settings.key),
            scheduler,
            shared: shared.clone(),
            metrics: metrics.clone(),
            table,
            meta,
            seeds,
            out: Vec::with_capacity(GOSSIP_PACKET_BYTES_MAX),
        };
        tokio::spawn(owner.run(rx));
        tokio::spawn(receive_loop(socket, Sealer::new(settings.key), tx.clone(), metrics));
        let refresh = Duration::from_millis(settings.refresh_ms);
        let ticker = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(refresh);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if ticker.send(Input::Refresh).await.is_err() {
                    return;
                }
            }
        });
        tracing::info!(addr = %local_addr, bump = me.bump, encrypted = settings.key.is_some(), "gossip started");
        Ok(Gossip { inputs: tx, shared, local_addr, me })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn identity(&self) -> &MemberId {
        &self.me
    }

    /// Every member known, one per node id, sorted by id.
    pub fn members(&self) -> Vec<MemberView> {
        self.shared.view.read().unwrap_or_else(|p| p.into_inner()).members()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<MemberEvent> {
        self.shared.events.subscribe()
    }

    /// New load figures, published with the next refresh.
    pub fn set_load(&self, load: GossipLoad) {
        let _ = self.inputs.try_send(Input::Load(load));
    }

    /// Announces that this process is leaving and leaves the cluster.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inputs.send(Input::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}

struct Owner {
    foca: Foca<MemberId, PostcardCodec, StdRng, MetaHandler>,
    runtime: AccumulatingRuntime<MemberId>,
    socket: Arc<UdpSocket>,
    sealer: Sealer,
    scheduler: mpsc::UnboundedSender<(Instant, Timer<MemberId>)>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    table: MetaTable,
    meta: MemberMeta,
    seeds: Vec<SocketAddr>,
    out: Vec<u8>,
}

impl Owner {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        self.publish();
        self.announce_to_seeds();
        self.flush().await;
        while let Some(input) = rx.recv().await {
            let result = match input {
                Input::Data(data) => self.foca.handle_data(&data, &mut self.runtime),
                Input::Timer(timer) => self.foca.handle_timer(timer, &mut self.runtime),
                Input::Load(load) => {
                    self.meta.load = load;
                    Ok(())
                }
                Input::Refresh => {
                    self.publish();
                    if self.foca.num_members() == 0 {
                        self.announce_to_seeds();
                    }
                    Ok(())
                }
                Input::Leave(done) => {
                    self.meta.leaving = true;
                    self.publish();
                    let _ = self.foca.gossip(&mut self.runtime);
                    let r = self.foca.leave_cluster(&mut self.runtime);
                    self.flush().await;
                    let _ = done.send(());
                    r
                }
            };
            if let Err(e) = result {
                // Foca tolerates bad peers; a failure here concerns one packet or timer.
                tracing::debug!(error = %e, "gossip input refused");
                self.metrics.gossip_drop("malformed");
            }
            self.flush().await;
        }
    }

    /// Publishes this process's metadata as a new version.
    fn publish(&mut self) {
        self.meta.version += 1;
        if let Err(e) = self.foca.add_broadcast(&self.meta.encode()) {
            tracing::warn!(error = %e, "could not publish member metadata");
        }
    }

    fn announce_to_seeds(&mut self) {
        for addr in self.seeds.clone() {
            // The seed's real identity is learned from its answer.
            let Ok(seed_id) = NodeId::new("seed") else { continue };
            let _ = self.foca.announce(MemberId { node_id: seed_id, addr, bump: 0 }, &mut self.runtime);
        }
    }

    /// Sends, schedules and notifies whatever the last inputs produced.
    async fn flush(&mut self) {
        while let Some((dst, data)) = self.runtime.to_send() {
            self.sealer.seal(&data, &mut self.out);
            match self.socket.send_to(&self.out, dst.addr).await {
                Ok(_) => self.metrics.gossip_packet("out"),
                Err(e) => tracing::debug!(to = %dst.addr, error = %e, "gossip send failed"),
            }
        }
        let now = Instant::now();
        while let Some((delay, timer)) = self.runtime.to_schedule() {
            let _ = self.scheduler.send((now + delay, timer));
        }
        let mut someone_up = false;
        while let Some(n) = self.runtime.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => {
                    someone_up = true;
                    let _ = self.shared.events.send(MemberEvent::Up(id.node_id));
                }
                OwnedNotification::MemberDown(id) => {
                    let _ = self.shared.events.send(MemberEvent::Down(id.node_id));
                }
                _ => {}
            }
        }
        if someone_up {
            // A newcomer learns who we are now rather than at the next refresh.
            self.publish();
            while let Some((dst, data)) = self.runtime.to_send() {
                self.sealer.seal(&data, &mut self.out);
                if self.socket.send_to(&self.out, dst.addr).await.is_ok() {
                    self.metrics.gossip_packet("out");
                }
            }
        }
        self.refresh_view();
    }

    fn refresh_view(&self) {
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let metas = self.table.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut view = self.shared.view.write().unwrap_or_else(|p| p.into_inner());
        let members = self.foca.iter_membership_state().map(|m| (m.id(), m.state()));
        view.refresh(now_ms, self.foca.identity(), members, &metas);
        let counts: Vec<(&'static str, i64)> =
            MemberState::ALL.iter().map(|s| (s.as_str(), view.count(*s) as i64)).collect();
        self.metrics.set_members(&counts);
    }
}

async fn receive_loop(socket: Arc<UdpSocket>, sealer: Sealer, tx: mpsc::Sender<Input>, metrics: Arc<Metrics>) {
    // One byte more than the limit, so an oversize datagram is seen as such (not truncated
    // to a valid-looking size).
    let mut buf = vec![0u8; GOSSIP_PACKET_BYTES_MAX + 1];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "gossip receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        metrics.gossip_packet("in");
        let payload = match sealer.open(&buf[..len]) {
            Ok(p) => p,
            Err(drop) => {
                tracing::debug!(%from, len, reason = drop.reason(), "gossip packet dropped");
                metrics.gossip_drop(drop.reason());
                continue;
            }
        };
        if tx.try_send(Input::Data(payload)).is_err() {
            tracing::debug!(%from, "gossip input queue full: packet dropped");
            metrics.gossip_drop("overload");
        }
    }
}

/// Delivers foca's timers in deadline order (one task, a min-heap): timers delivered out of
/// order confuse foca.
fn start_scheduler(inputs: mpsc::Sender<Input>) -> mpsc::UnboundedSender<(Instant, Timer<MemberId>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Timer<MemberId>)>();
    tokio::spawn(async move {
        let mut queue: BinaryHeap<Reverse<(Instant, u64, TimerBox)>> = BinaryHeap::new();
        let mut seq = 0u64;
        loop {
            let now = Instant::now();
            while queue.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
                let Some(Reverse((_, _, TimerBox(timer)))) = queue.pop() else { break };
                if inputs.send(Input::Timer(timer)).await.is_err() {
                    return;
                }
            }
            let next = queue.peek().map(|Reverse((at, _, _))| *at);
            let received = match next {
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => continue,
                    r = rx.recv() => r,
                },
                None => rx.recv().await,
            };
            match received {
                Some((at, timer)) => {
                    seq += 1;
                    queue.push(Reverse((at, seq, TimerBox(timer))));
                }
                None => return,
            }
        }
    });
    tx
}

/// Orders nothing by itself: the heap orders by (deadline, arrival).
struct TimerBox(Timer<MemberId>);

impl PartialEq for TimerBox {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TimerBox {}
impl PartialOrd for TimerBox {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerBox {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_members_are_asked_back_every_suspicion_window_all_of_them() {
        let cfg = foca_config(5, 5000);
        let a = cfg.periodic_announce_to_down_members.expect("announces to down members");
        assert_eq!(a.frequency, Duration::from_millis(5000));
        assert_eq!(a.num_members.get(), 5);
        // Never zero members, whatever the configured size.
        assert_eq!(foca_config(0, 5000).periodic_announce_to_down_members.unwrap().num_members.get(), 1);
    }
}

//! A switch in its namespaces with a P4Runtime session and sockets on its
//! ports: the [`Rig`] that runs the packet scenarios through real ports.
//!
//! Knowing when the switch is done with a packet, without timing: after
//! the scenario's frame, the rig sends one marker frame per port into the
//! same ingress port, each routed (by an entry the rig adds, in
//! [`RIG_PREFIX`]) out of a different port. Both switches keep the order
//! of one port's arrivals through the ingress pipeline and of each egress
//! port's departures (bmv2: one ingress thread, one FIFO per egress port;
//! switch-agent: the frames enter one CPU's backlog in order, the sending
//! thread being pinned). So once every marker is back, the frame has been
//! through the ingress pipeline, its counters have moved, and whatever it
//! became has left its port ahead of that port's marker.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use talaria_common::net::IPPROTO_UDP;
use talaria_switch_dataplane::{
    testing::{
        eth, ipv4, mac,
        scenarios::{route_out, Counters, Op, Rig, RigError, Watch, INGRESS_PORT, RIG_PREFIX},
        udp,
    },
    Entry,
};
use talaria_tables::build;

use crate::{
    netns::Topology,
    p4rt::{self, Session},
    packet::{wait_any, PacketSocket, PinnedToCpu},
    switch::{talaria_pipeline, Switch, SwitchKind, DEVICE_ID},
    Error, Result,
};

/// How long a packet and its markers may take through the switch; bmv2
/// does thousands of packets per second, so this is ample.
const PACKET_TIMEOUT: Duration = Duration::from_secs(10);

/// Payload prefix of the rig's marker frames.
const MARKER: &[u8] = b"talaria-rig-marker";

/// A switch of `kind` with `ports` ports, its pipeline committed and the
/// marker routes in place. Everything goes on drop, in field order: the
/// session, the switch process, then the namespaces.
pub struct Testbed {
    session: Session,
    runtime: tokio::runtime::Runtime,
    sockets: Vec<PacketSocket>,
    switch: Switch,
    topology: Topology,
    next_marker: u32,
}

impl Testbed {
    pub fn start(kind: SwitchKind, ports: u16) -> Result<Self> {
        let pipeline = talaria_pipeline()?;
        let topology = Topology::new(&kind.to_string(), ports)?;
        let switch = Switch::start(kind, &topology)?;
        let sockets = topology.peers.run(|| {
            (1..=ports)
                .map(|p| PacketSocket::open(&Topology::peer_port(p)))
                .collect::<Result<Vec<_>>>()
        })??;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(crate::io_err("tokio runtime"))?;
        let mut session = runtime.block_on(async {
            let ch = p4rt::channel(Some(switch.netns.clone()), switch.grpc).await?;
            Session::start(ch, DEVICE_ID, pipeline).await
        })?;
        runtime.block_on(async {
            for p in 1..=ports {
                session.write(Op::Insert, &marker_route(p)).await?;
            }
            Ok::<_, Error>(())
        })?;
        Ok(Self {
            session,
            runtime,
            sockets,
            switch,
            topology,
            next_marker: 0,
        })
    }

    pub fn kind(&self) -> SwitchKind {
        self.switch.kind
    }

    /// The switch process's output so far, for failure messages.
    pub fn switch_output(&self) -> String {
        self.switch.output()
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Every frame queued on any port now: (port, frame).
    fn drain(&self) -> Result<Vec<(u16, Vec<u8>)>> {
        let mut out = Vec::new();
        for (i, s) in self.sockets.iter().enumerate() {
            while let Some(f) = s.try_recv()? {
                out.push((i as u16 + 1, f));
            }
        }
        Ok(out)
    }
}

/// The route that takes port `p`'s marker out of `p`.
fn marker_route(p: u16) -> Entry {
    route_out(build::prefix(marker_addr(p), 32), p)
}

fn marker_addr(p: u16) -> Ipv4Addr {
    let [a, b, c, _] = RIG_PREFIX.addr.octets();
    Ipv4Addr::new(a, b, c, p as u8)
}

fn marker_frame(p: u16, seq: u32) -> Vec<u8> {
    let mut payload = MARKER.to_vec();
    payload.extend_from_slice(&seq.to_be_bytes());
    let [a, b, c, _] = RIG_PREFIX.addr.octets();
    eth(
        mac(0xbb),
        mac(0xaa),
        &ipv4(
            Ipv4Addr::new(a, b, c, 254),
            marker_addr(p),
            64,
            IPPROTO_UDP,
            &udp(9, 9, &payload),
        ),
    )
}

/// The marker sequence number in `frame`, if it is one of the rig's
/// markers as a switch forwards it.
fn marker_seq(frame: &[u8]) -> Option<u32> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip.len() < 28 || ip[9] != IPPROTO_UDP {
        return None;
    }
    if ip[16..19] != RIG_PREFIX.addr.octets()[..3] {
        return None;
    }
    let payload = ip.get(28..)?;
    let seq = payload.strip_prefix(MARKER)?.get(..4)?;
    Some(u32::from_be_bytes(seq.try_into().ok()?))
}

impl Rig for Testbed {
    fn write(&mut self, op: Op, entry: &Entry) -> Result<(), RigError> {
        let session = &mut self.session;
        Ok(self.runtime.block_on(session.write(op, entry))?)
    }

    fn send(&mut self, frame: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, RigError> {
        let stray = self.drain()?;
        if !stray.is_empty() {
            return Err(format!(
                "{} stray frames before sending, on ports {:?}",
                stray.len(),
                stray.iter().map(|f| f.0).collect::<Vec<_>>()
            )
            .into());
        }
        let seq = self.next_marker;
        self.next_marker += 1;
        let ports = self.topology.ports;
        let ingress = &self.sockets[usize::from(INGRESS_PORT) - 1];
        {
            let _pin = PinnedToCpu::here()?;
            ingress.send(frame)?;
            for p in 1..=ports {
                ingress.send(&marker_frame(p, seq))?;
            }
        }
        let deadline = Instant::now() + PACKET_TIMEOUT;
        let mut markers = vec![false; usize::from(ports)];
        let mut out = Vec::new();
        while markers.contains(&false) {
            let ready = wait_any(&self.sockets, deadline)?;
            if ready.is_empty() {
                let missing: Vec<usize> = (0..markers.len())
                    .filter(|i| !markers[*i])
                    .map(|i| i + 1)
                    .collect();
                return Err(Error::Timeout(format!(
                    "{}: markers of ports {missing:?} not back within {PACKET_TIMEOUT:?} \
                     ({} other frames so far)",
                    self.switch.kind,
                    out.len()
                ))
                .into());
            }
            for i in ready {
                while let Some(f) = self.sockets[i].try_recv()? {
                    match marker_seq(&f) {
                        Some(s) if s == seq => markers[i] = true,
                        _ => out.push((i as u16 + 1, f)),
                    }
                }
            }
        }
        Ok(out)
    }

    fn counters(&mut self, watch: &Watch) -> Result<Counters, RigError> {
        let session = &mut self.session;
        Ok(self.runtime.block_on(session.counters(watch))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use talaria_tables::ipv4_route;

    #[test]
    fn a_forwarded_marker_is_recognised_and_nothing_else_is() {
        let mut f = marker_frame(2, 7);
        // As `ipv4_route` forwards it: MACs and TTL rewritten.
        f[0..12].copy_from_slice(&[9; 12]);
        f[22] -= 1;
        assert_eq!(marker_seq(&f), Some(7));
        let plain = eth(
            mac(1),
            mac(2),
            &ipv4(
                Ipv4Addr::new(192, 168, 1, 2),
                Ipv4Addr::new(192, 168, 2, 2),
                64,
                IPPROTO_UDP,
                &udp(9, 9, MARKER),
            ),
        );
        assert_eq!(marker_seq(&plain), None);
        assert_eq!(marker_seq(&f[..40]), None);
    }

    #[test]
    fn marker_routes_stay_in_the_rig_prefix() {
        for p in 1..=4 {
            match marker_route(p) {
                Entry::Ipv4Route(ipv4_route::Entry {
                    key: ipv4_route::Key { dst_addr },
                    action: ipv4_route::Action::Forward { port, .. },
                }) => {
                    assert_eq!(port, p);
                    assert_eq!(dst_addr.len, 32);
                    assert!(RIG_PREFIX.contains(dst_addr.addr), "{dst_addr}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

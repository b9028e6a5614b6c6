//! The Leases behind placement: this pod's node lease, renewed every [`BEAT`]; room leases,
//! created for new rooms, taken over from dead pods, and let go once their room stayed empty.
//!
//! The pod needs, in its own namespace only: leases get, list, watch, create, update, patch, delete
//! (the tenant's Role, which the operator makes).

use std::sync::Arc;
use std::time::Duration;

use bedside_crds::break_glass::BreakGlassLease;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::watch;

use bedside_audit::delivery::{Auditor, Who};
use bedside_audit::event::Action;
use bedside_crds::leases::{
    VISIT_KIND, VisitChange, VisitRecord, VisitWriteError, room_key_of, visit_lease_expired,
    visit_lease_name, write_visit_change,
};

use super::{
    DRAINING_ANNOTATION, Decision, KIND_LABEL, MEMORY_ANNOTATION, NodeView, ROOM_KEY_LABEL,
    Releases, RoomView, SIGNALING_ANNOTATION, TENANT_LABEL, decide, room_key,
};
use crate::error::NodeError;
use crate::meeting::Memory;
use crate::sfu::{Command, SfuHandle};

/// How often a pod renews its node lease.
pub const BEAT: Duration = Duration::from_secs(2);
/// A pod whose node lease is older than this is dead: its rooms are placed again.
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// How long a starting pod waits for its first view of the Leases.
const CACHE_READY: Duration = Duration::from_secs(20);
/// How long a room lease waits for its first participant, or outlives its last.
const ROOM_LINGER: Duration = Duration::from_secs(20);
/// Room leases are let go every this many beats.
const RELEASE_EVERY: u32 = 5;
const FIELD_MANAGER: &str = "bedside-media-node";

/// Where a join goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Owner {
    Me,
    /// Another pod, at its in-cluster signaling URL.
    Peer {
        name: String,
        url: String,
    },
    /// No pod can take a new room now.
    Nowhere,
}

/// This pod's view of the tenant's placement Leases: reads come from a watch-fed cache (a join
/// costs no API round trip unless it places a room), writes go to the API server.
#[derive(Clone)]
pub struct Placement {
    api: Api<Lease>,
    cache: reflector::Store<Lease>,
    /// Meeting memories to write, in the order the meetings changed.
    memories: tokio::sync::mpsc::UnboundedSender<(String, Memory)>,
    namespace: String,
    tenant: String,
    me: String,
    url: String,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("namespace", &self.namespace)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

fn placement_error(namespace: &str, source: kube::Error) -> NodeError {
    NodeError::Placement {
        namespace: namespace.to_string(),
        source: Box::new(source),
    }
}

impl Placement {
    /// In-cluster: the pod's ServiceAccount token and the `kubernetes` Service.
    pub async fn connect(
        namespace: &str,
        tenant: &str,
        me: &str,
        url: String,
    ) -> Result<Self, NodeError> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| placement_error(namespace, e))?;
        let api: Api<Lease> = Api::namespaced(client, namespace);
        let (cache, writer) = reflector::store();
        let leases = watcher::Config::default().labels(&format!("{TENANT_LABEL}={tenant}"));
        let feed = reflector(writer, watcher(api.clone(), leases))
            .default_backoff()
            .touched_objects();
        tokio::spawn(feed.for_each(|event| {
            if let Err(e) = event {
                tracing::warn!(error = %e, "room placement: the lease watch failed; retrying");
            }
            futures::future::ready(())
        }));
        // The first list must arrive before a join is placed, or every room looks new.
        match tokio::time::timeout(CACHE_READY, cache.wait_until_ready()).await {
            Ok(Ok(())) => {}
            _ => {
                // The same call, for its error: what the watch could not do.
                let error = api.list(&ListParams::default().limit(1)).await.err();
                return Err(match error {
                    Some(e) => placement_error(namespace, e),
                    None => NodeError::PlacementNotReady {
                        namespace: namespace.to_string(),
                        waited: CACHE_READY,
                    },
                });
            }
        }
        let (memories, pending) = tokio::sync::mpsc::unbounded_channel();
        let placement = Self {
            api,
            cache,
            memories,
            namespace: namespace.to_string(),
            tenant: tenant.to_string(),
            me: me.to_string(),
            url,
        };
        tokio::spawn(placement.clone().write_memories(pending));
        Ok(placement)
    }

    fn room_lease_name(&self, key: &str) -> String {
        format!("{}-room-{key}", self.tenant)
    }

    fn of_kind_cached(&self, kind: &str) -> Vec<Arc<Lease>> {
        self.cache.state_filter(|lease| {
            lease
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.get(KIND_LABEL).is_some_and(|k| k == kind))
        })
    }

    fn nodes(&self) -> Vec<NodeView> {
        self.of_kind_cached("node")
            .iter()
            .filter_map(|lease| node_view(lease))
            .collect()
    }

    fn room_views(&self) -> Vec<RoomView> {
        self.of_kind_cached("room")
            .iter()
            .filter_map(|lease| room_view(lease))
            .collect()
    }

    fn cached(&self, name: &str) -> Option<Lease> {
        let key = reflector::ObjectRef::new(name).within(&self.namespace);
        self.cache.get(&key).map(|lease| (*lease).clone())
    }

    /// The room leases this pod holds (deletes are guarded by resourceVersion, so a cache a
    /// moment behind deletes nothing another pod took over).
    fn mine(&self) -> Vec<(RoomView, Arc<Lease>)> {
        self.of_kind_cached("room")
            .into_iter()
            .filter_map(|lease| Some((room_view(&lease)?, lease)))
            .filter(|(view, _)| view.holder == self.me)
            .collect()
    }

    /// Where `room`'s participants meet, placing the room if no live pod holds it. Pods that
    /// race to place one room agree: the API server lets one create (or take over) its lease.
    pub async fn owner(&self, room: &str) -> Result<Owner, NodeError> {
        let key = room_key(room);
        let name = self.room_lease_name(&key);
        let fail = |e| placement_error(&self.namespace, e);
        // The cache first; after a conflict, the API server (the cache may not have it yet).
        let mut existing = self.cached(&name);
        for _ in 0..4 {
            let nodes = self.nodes();
            let now = Timestamp::now();
            let current = existing.as_ref().and_then(room_view);
            let on = match decide(current.as_ref(), &nodes, &self.room_views(), now) {
                Decision::Held { by } => return Ok(self.owner_named(&by, &nodes)),
                Decision::Nowhere => return Ok(Owner::Nowhere),
                Decision::Place { on } => on,
            };
            let mut lease = self.room_lease(&name, &key, &on, now);
            let written = match existing.take() {
                None => self.api.create(&PostParams::default(), &lease).await,
                Some(old) => {
                    // Taken over from a dead pod, only if nobody changed it since we read it,
                    // with the meeting's memory.
                    lease.metadata.resource_version = old.metadata.resource_version;
                    lease.metadata.annotations = old.metadata.annotations;
                    self.api
                        .replace(&name, &PostParams::default(), &lease)
                        .await
                }
            };
            match written {
                Ok(_) => {
                    tracing::info!(room_key = %key, node = %on, "room placed");
                    return Ok(self.owner_named(&on, &nodes));
                }
                // Another pod placed it first (or the cache was behind): read it and decide again.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    existing = self.api.get_opt(&name).await.map_err(fail)?;
                }
                Err(e) => return Err(fail(e)),
            }
        }
        Err(NodeError::PlacementContended)
    }

    fn owner_named(&self, name: &str, nodes: &[NodeView]) -> Owner {
        if name == self.me {
            return Owner::Me;
        }
        match nodes
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.url.clone())
        {
            Some(url) => Owner::Peer {
                name: name.to_string(),
                url,
            },
            None => Owner::Nowhere,
        }
    }

    /// The labels every placement lease carries: its tenant and its kind (node or room).
    fn labels(&self, kind: &str) -> std::collections::BTreeMap<String, String> {
        [
            (TENANT_LABEL.to_string(), self.tenant.clone()),
            (KIND_LABEL.to_string(), kind.to_string()),
        ]
        .into()
    }

    fn room_lease(&self, name: &str, key: &str, holder: &str, now: Timestamp) -> Lease {
        let mut labels = self.labels("room");
        labels.insert(ROOM_KEY_LABEL.to_string(), key.to_string());
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_string()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                ..Default::default()
            }),
        }
    }

    /// Says this pod is alive, where it listens, and whether it is draining.
    async fn beat(&self, draining: bool) -> Result<(), kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.me.clone()),
                labels: Some(self.labels("node")),
                annotations: Some(
                    [
                        (SIGNALING_ANNOTATION.to_string(), self.url.clone()),
                        (DRAINING_ANNOTATION.to_string(), draining.to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.me.clone()),
                lease_duration_seconds: Some(NODE_TTL.as_secs() as i32),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..Default::default()
            }),
        };
        self.api
            .patch(
                &self.me,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
            .map(|_| ())
    }

    /// Lets go of the room leases this pod holds whose rooms stayed empty for the linger.
    async fn release_idle(
        &self,
        releases: &mut Releases,
        active: &[String],
    ) -> Result<(), kube::Error> {
        let mine = self.mine();
        let held: Vec<String> = mine.iter().map(|(view, _)| view.key.clone()).collect();
        let active: Vec<String> = active.iter().map(|room| room_key(room)).collect();
        for key in releases.due(&held, &active, std::time::Instant::now(), ROOM_LINGER) {
            let Some((_, lease)) = mine.iter().find(|(view, _)| view.key == key) else {
                continue;
            };
            // A lock, an end or an expelled participant is kept for a day (as the node keeps
            // an ended meeting), even by a pod that restarted without the meeting.
            let keep = memory_of(lease).is_some_and(|m| m.outlives_the_visit())
                && placed_at(lease).is_some_and(|at| {
                    Timestamp::now().duration_since(at) < jiff::SignedDuration::from_hours(24)
                });
            if !keep {
                self.delete_if_unchanged(lease).await?;
            }
        }
        Ok(())
    }

    async fn delete_if_unchanged(&self, lease: &Lease) -> Result<(), kube::Error> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: lease.metadata.resource_version.clone(),
                uid: lease.metadata.uid.clone(),
            }),
            ..Default::default()
        };
        match self
            .api
            .delete(&lease.metadata.name.clone().unwrap_or_default(), &params)
            .await
        {
            Ok(_) => Ok(()),
            // Gone already, or taken over: not ours to delete any more.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What bedside remembers of the visit held in `room` (its visit lease, written by the
    /// visits API or `bedside-operator visit cancel|reissue`), if anything.
    pub fn visit(&self, room: &str) -> Option<VisitRecord> {
        visit_in(&self.cache, &self.namespace, &self.tenant, room)
    }

    /// Whether an active BreakGlass `name` lets `user` into `room` now (its lease, written by
    /// the operator while the grant is active): a lookup in the watched cache.
    pub fn break_glass_lets_in(&self, name: &str, user: &str, room: &str) -> bool {
        let lease = bedside_crds::break_glass::lease_name(&self.tenant, name);
        self.cached(&lease)
            .and_then(|lease| BreakGlassLease::of(&lease))
            .is_some_and(|grant| grant.lets_in(name, user, room, Timestamp::now()))
    }

    /// Cancels `visit`, or makes the next issue of its links current: its visit lease, which
    /// every pod watches. The record written; `None`: cancelled already.
    pub async fn change_visit(
        &self,
        change: VisitChange,
        visit: &str,
        until: Timestamp,
    ) -> Result<Option<VisitRecord>, NodeError> {
        write_visit_change(&self.api, change, (&self.tenant, visit), until)
            .await
            .map_err(|e| match e {
                VisitWriteError::Refused(e) => NodeError::Visit(e),
                VisitWriteError::Api(e) => placement_error(&self.namespace, e),
                VisitWriteError::Contended => NodeError::PlacementContended,
            })
    }

    /// Whether a live pod holds `room` (its call is going on, or ended less than a minute ago).
    pub fn held(&self, room: &str) -> bool {
        let Some(lease) = self.cached(&self.room_lease_name(&room_key(room))) else {
            return false;
        };
        let nodes = self.nodes();
        room_view(&lease).is_some_and(|view| {
            nodes
                .iter()
                .any(|n| n.name == view.holder && n.live(Timestamp::now()))
        })
    }

    /// Ends the meetings held here whose visits were cancelled, and deletes visit leases
    /// whose visits' windows have closed (any pod may: the delete is guarded).
    async fn enforce_cancellations(
        &self,
        sfu: &SfuHandle,
        active: &[String],
        audit: &Auditor,
    ) -> Result<(), kube::Error> {
        let visits = self.of_kind_cached(VISIT_KIND);
        for room in active {
            let key = room_key(room);
            let cancelled = visits.iter().any(|v| {
                room_key_of(v, VISIT_KIND).is_some_and(|k| k == key) && VisitRecord::of(v).cancelled
            });
            let room_ = room.clone();
            if cancelled
                && sfu
                    .ask(|reply| Command::Cancel { room: room_, reply })
                    .await
                    .unwrap_or(false)
            {
                audit.record(
                    &Who::NODE,
                    Action::MeetingEnd,
                    Some("visit-cancelled"),
                    Some(room),
                    None,
                );
                tracing::info!(room_key = %key, "visit cancelled: its meeting here ended");
            }
        }
        let now = Timestamp::now();
        for lease in visits.iter().filter(|v| visit_lease_expired(v, now)) {
            self.delete_if_unchanged(lease).await?;
        }
        Ok(())
    }

    /// The meeting's memory kept in the room's lease, if any.
    pub fn memory(&self, room: &str) -> Option<Memory> {
        memory_of(&self.cached(&self.room_lease_name(&room_key(room)))?)
    }

    /// Keeps the meeting's memory in its room's lease: queued, and written in order, so an
    /// older state never overwrites a newer one.
    pub fn remember(&self, room: &str, memory: Memory) {
        let _ = self.memories.send((room.to_string(), memory));
    }

    async fn write_memories(
        self,
        mut pending: tokio::sync::mpsc::UnboundedReceiver<(String, Memory)>,
    ) {
        let mut written: std::collections::HashMap<String, u64> = Default::default();
        while let Some((room, memory)) = pending.recv().await {
            // A newer state of this meeting was written already.
            if written.get(&room).is_some_and(|r| *r >= memory.revision) {
                continue;
            }
            written.insert(room.clone(), memory.revision);
            let name = self.room_lease_name(&room_key(&room));
            let Ok(text) = serde_json::to_string(&memory) else {
                continue;
            };
            let patch = serde_json::json!({"metadata": {"annotations": {MEMORY_ANNOTATION: text}}});
            if let Err(e) = self
                .api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(error = %e, "room placement: cannot keep a meeting's lock, expelled and admitted participants in its lease; they hold on this pod only");
            }
        }
    }

    /// On the way out: this pod's node lease goes, and its rooms' leases, so new joins are
    /// placed at once; a room with a memory keeps its lease (the next pod takes it over).
    pub async fn leave(&self) {
        for (_, lease) in self.mine() {
            if !memory_of(&lease).is_some_and(|m| m.outlives_the_visit()) {
                let _ = self.delete_if_unchanged(&lease).await;
            }
        }
        let _ = self.api.delete(&self.me, &DeleteParams::default()).await;
    }
}

/// The check a join pays for its visit (cancelled? reissued?): a lookup in the watched
/// cache, no API call.
pub fn visit_in(
    cache: &reflector::Store<Lease>,
    namespace: &str,
    tenant: &str,
    room: &str,
) -> Option<VisitRecord> {
    let name = visit_lease_name(tenant, room);
    cache
        .get(&reflector::ObjectRef::new(&name).within(namespace))
        .map(|lease| VisitRecord::of(&lease))
}

fn node_view(lease: &Lease) -> Option<NodeView> {
    let spec = lease.spec.as_ref()?;
    let annotations = lease.metadata.annotations.as_ref();
    Some(NodeView {
        name: lease.metadata.name.clone()?,
        url: annotations.and_then(|a| a.get(SIGNALING_ANNOTATION).cloned()),
        draining: annotations
            .and_then(|a| a.get(DRAINING_ANNOTATION))
            .is_some_and(|d| d == "true"),
        renewed: spec.renew_time.as_ref()?.0,
        ttl: Duration::from_secs(spec.lease_duration_seconds?.max(0) as u64),
    })
}

fn placed_at(lease: &Lease) -> Option<Timestamp> {
    Some(lease.spec.as_ref()?.acquire_time.as_ref()?.0)
}

fn memory_of(lease: &Lease) -> Option<Memory> {
    let text = lease
        .metadata
        .annotations
        .as_ref()?
        .get(MEMORY_ANNOTATION)?;
    serde_json::from_str(text).ok()
}

fn room_view(lease: &Lease) -> Option<RoomView> {
    Some(RoomView {
        key: lease.metadata.labels.as_ref()?.get(ROOM_KEY_LABEL)?.clone(),
        holder: lease.spec.as_ref()?.holder_identity.clone()?,
    })
}

/// Renews the node lease every beat (saying "draining" once the node drains), ends the
/// meetings of cancelled visits held here and lets go of idle room leases; a failure is logged when it starts and when it ends, not every beat.
/// A pod without a media address yet does not beat: no room is sent to it.
pub fn spawn(
    placement: Arc<Placement>,
    sfu: SfuHandle,
    draining: watch::Receiver<bool>,
    media_address: watch::Receiver<Option<std::net::SocketAddr>>,
    audit: Arc<Auditor>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut releases = Releases::default();
        let mut failing = false;
        let mut ticker = tokio::time::interval(BEAT);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for beat in 0u32.. {
            ticker.tick().await;
            if media_address.borrow().is_none() {
                continue;
            }
            let is_draining = *draining.borrow();
            let mut result = placement.beat(is_draining).await;
            let active = sfu.rooms().await.unwrap_or_default();
            if result.is_ok() {
                result = placement.enforce_cancellations(&sfu, &active, &audit).await;
            }
            if result.is_ok() && beat % RELEASE_EVERY == 0 {
                result = placement.release_idle(&mut releases, &active).await;
            }
            match (&result, failing) {
                (Err(e), false) => {
                    tracing::warn!(error = %e, "room placement: cannot renew this pod's lease; other pods will stop sending it rooms");
                }
                (Ok(()), true) => tracing::info!("room placement: lease renewed again"),
                _ => {}
            }
            failing = result.is_err();
        }
    })
}

//! A partition's state as a snapshot holds it, and its rebuild at start-up.
//!
//! - [`PartitionImage`]: every stream's version → LSN map, the idempotency window, the
//!   ring's events, and where a recovery from it resumes the journal scan; taken at the
//!   published LSN on the owning shard ([`ImageCopier`], in slices so appends go on), encoded
//!   with postcard off the shard.
//! - [`Rebuild`]: the state recovery builds, from an image and the journal frames after it,
//!   before the partition serves.
//!
//! The cut is consistent: stream versions and ring events are copied below the LSN fixed when
//! the copy starts (appends only add above it); an idempotency entry or ring event evicted
//! during the copy is simply not in the image (both are bounded windows; the ring is a cache).

use std::collections::VecDeque;

use super::change::{apply_change, Deleted, StreamChange, StreamMeta};
use super::error::ImageError;
use super::groups::StreamGroups;
use super::idempotency::IdemEntry;
use super::partition::{Partition, StreamEntry};
use super::payload::{InMemory, RingFields};
use crate::journal::device::Storage;
use crate::journal::format::{RecordIter, RECORD_KIND_CHANGE, RECORD_KIND_EVENT};
use crate::journal::scan::FrameInfo;
use crate::journal::{RecordRef, StoreId};
use crate::protocol::StreamId;
use crate::ring::RingConfig;

/// Rebuilds stream state from journal frames during recovery.
pub struct Rebuild {
    pub(super) streams: super::streams::Streams,
    pub(super) idem: VecDeque<([u8; 16], IdemEntry)>,
    window: usize,
    pub(super) mem: InMemory,
    /// Events recovered from the journal (not counting a snapshot's).
    pub events: u64,
    /// Records below this LSN are in the snapshot the rebuild started from.
    pub from_lsn: u64,
    /// The first LSN the journal scan offered at or above `from_lsn` (to prove no gap).
    pub first_seen: Option<u64>,
    /// Events below this LSN are not in the ring the rebuild started with, and the image did
    /// not say what time they reach (a snapshot written before `complete_from_ns`): the
    /// journal scan counts their timestamps as left out of the ring ([`Rebuild::frame`]).
    left_out_below: u64,
}

/// A partition's state at an LSN, as a snapshot file holds it (encoded with postcard):
/// every stream's version → LSN map, the idempotency window, the ring's events, and where a
/// recovery from it resumes the journal scan.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PartitionImage {
    /// The image holds every record below this LSN and nothing from it on.
    pub lsn: u64,
    streams: Vec<(String, Vec<u64>)>,
    idem: Vec<([u8; 16], String, u64, u64)>,
    ring: RingImage,
    pub resume: crate::journal::Resume,
    /// The ring's `complete_from_ns` for the events below the image's first ring event: one
    /// past the largest timestamp of an event the image's ring does not hold. Encoded after
    /// the body's other fields (docs/FORMAT.md); `None` when decoded from a file written
    /// before it existed.
    #[serde(skip)]
    pub complete_from_ns: Option<u64>,
    /// Every stream's version → stream ID list, in the order of `streams`. Encoded after
    /// `complete_from_ns` (docs/FORMAT.md); `None` when decoded from a file written before
    /// events carried IDs (its streams' IDs are then [`StreamId::legacy`]).
    #[serde(skip)]
    pub stream_ids: Option<Vec<Vec<StreamId>>>,
    /// Every stream's deleted versions, in the order of `streams`. Encoded after the stream
    /// IDs; `None` in a file written before deletions (nothing deleted).
    #[serde(skip)]
    pub deleted: Option<Vec<Deleted>>,
    /// What XSETID set of every stream, in the order of `streams`. Encoded after the deleted
    /// versions; `None` in a file written before XSETID (nothing set).
    #[serde(skip)]
    pub meta: Option<Vec<StreamMeta>>,
    /// Every stream's consumer groups, in the order of `streams`. Encoded after the meta;
    /// `None` in a file written before consumer groups (none).
    #[serde(skip)]
    pub groups: Option<Vec<StreamGroups>>,
}

/// What follows the body's original fields in a partition snapshot (docs/FORMAT.md), each
/// field after the one before: older readers ignore what they do not know (postcard ignores
/// trailing bytes), and a body that ends early is an older file's.
#[derive(serde::Serialize, serde::Deserialize)]
struct ImageTrailer {
    complete_from_ns: u64,
}

/// The trailer's second field.
#[derive(serde::Serialize, serde::Deserialize)]
struct IdTrailer {
    stream_ids: Vec<Vec<StreamId>>,
}

/// The trailer's third field.
#[derive(serde::Serialize, serde::Deserialize)]
struct DeletedTrailer {
    deleted: Vec<Deleted>,
}

/// The trailer's fourth field.
#[derive(serde::Serialize, serde::Deserialize)]
struct MetaTrailer {
    meta: Vec<StreamMeta>,
}

/// The trailer's fifth field.
#[derive(serde::Serialize, serde::Deserialize)]
struct GroupTrailer {
    groups: Vec<StreamGroups>,
}

/// The ring's events of an image: each event's columns, and every payload one after another
/// in one buffer. Encoded exactly as a list of items of five fields (LSN, stream version,
/// timestamp, value, payload bytes: docs/FORMAT.md), as when each event owned its payload;
/// held flat so that an image of millions of events is a handful of allocations. The image
/// is copied on the shard and encoded and written on another thread: one allocation per
/// event had that thread free millions of the shard's blocks, each free taking the lock of
/// the shard's glibc arena, so the shard's own allocations waited on a futex (2,000 times
/// a second, and p99 100 ms, while a 3M-event ring's snapshot was written).
#[derive(Default)]
pub(super) struct RingImage {
    items: Vec<RingSlot>,
    payloads: Vec<u8>,
}

/// One event of a [`RingImage`]: its columns and where its payload ends in `payloads`.
#[derive(Clone, Copy)]
struct RingSlot {
    lsn: u64,
    stream_version: u64,
    timestamp_ns: u64,
    value: f64,
    end: usize,
}

/// One event of a [`RingImage`] as it is read.
pub(super) struct RingItem<'a> {
    pub(super) lsn: u64,
    pub(super) stream_version: u64,
    pub(super) timestamp_ns: u64,
    pub(super) value: f64,
    pub(super) payload: &'a [u8],
}

impl RingImage {
    pub(super) fn push(&mut self, item: RingItem<'_>) {
        self.payloads.extend_from_slice(item.payload);
        self.items.push(RingSlot {
            lsn: item.lsn,
            stream_version: item.stream_version,
            timestamp_ns: item.timestamp_ns,
            value: item.value,
            end: self.payloads.len(),
        });
    }

    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.items.clear();
        self.payloads.clear();
    }

    pub(super) fn first_lsn(&self) -> Option<u64> {
        self.items.first().map(|s| s.lsn)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = RingItem<'_>> {
        let mut start = 0;
        self.items.iter().map(move |s| {
            let payload = &self.payloads[start..s.end];
            start = s.end;
            RingItem {
                lsn: s.lsn,
                stream_version: s.stream_version,
                timestamp_ns: s.timestamp_ns,
                value: s.value,
                payload,
            }
        })
    }
}

/// A payload encoded as a byte string: postcard writes its length and its bytes, exactly
/// what it writes for a `Vec<u8>` (a sequence of bytes), at once instead of byte by byte.
struct Bytes<'a>(&'a [u8]);

impl serde::Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// One ring event as encoded (and as it was before the image held payloads flat).
#[derive(serde::Serialize)]
struct RingItemOut<'a> {
    lsn: u64,
    stream_version: u64,
    timestamp_ns: u64,
    value: f64,
    payload: Bytes<'a>,
}

/// One ring event as decoded: its payload borrowed from the snapshot's bytes.
#[derive(serde::Deserialize)]
struct RingItemIn<'a> {
    lsn: u64,
    stream_version: u64,
    timestamp_ns: u64,
    value: f64,
    #[serde(borrow)]
    payload: &'a [u8],
}

impl serde::Serialize for RingImage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for item in self.iter() {
            seq.serialize_element(&RingItemOut {
                lsn: item.lsn,
                stream_version: item.stream_version,
                timestamp_ns: item.timestamp_ns,
                value: item.value,
                payload: Bytes(item.payload),
            })?;
        }
        seq.end()
    }
}

impl<'de> serde::Deserialize<'de> for RingImage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items;
        impl<'de> serde::de::Visitor<'de> for Items {
            type Value = RingImage;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of ring events")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RingImage, A::Error> {
                let mut ring = RingImage::default();
                while let Some(item) = seq.next_element::<RingItemIn<'de>>()? {
                    ring.push(RingItem {
                        lsn: item.lsn,
                        stream_version: item.stream_version,
                        timestamp_ns: item.timestamp_ns,
                        value: item.value,
                        payload: item.payload,
                    });
                }
                Ok(ring)
            }
        }
        d.deserialize_seq(Items)
    }
}

/// Drops the items of `v` a slice of [`IMAGE_SLICE`] at a time, yielding between slices.
async fn free_slices<T>(v: Vec<T>) {
    let mut items = v.into_iter();
    while items.by_ref().take(IMAGE_SLICE).count() == IMAGE_SLICE {
        futures_lite::future::yield_now().await;
    }
}

/// Items (stream index entries or ring events) copied between two yields of
/// [`Partition::image_yielding`].
pub(super) const IMAGE_SLICE: usize = 16 * 1024;

/// The state of an image copy in progress.
pub(super) struct ImageCopier {
    lsn: u64,
    names: Vec<String>,
    next_name: usize,
    /// The versions below the cut copied so far of stream `names[next_name]`, when a step
    /// ended inside it (a stream with more versions than a step copies).
    partial: Option<PartialStream>,
    streams: Vec<(String, Vec<u64>)>,
    stream_ids: Vec<Vec<StreamId>>,
    deleted: Vec<Deleted>,
    meta: Vec<StreamMeta>,
    groups: Vec<StreamGroups>,
    ring: RingImage,
    next_ring_lsn: u64,
    ring_done: bool,
    /// The idempotency window's ids when the copy began, in window order, and how many of
    /// them the steps have looked up; the entries copied (those still in the window then,
    /// below the cut).
    idem_ids: Vec<[u8; 16]>,
    next_idem: usize,
    idem: Vec<([u8; 16], String, u64, u64)>,
    /// The ring's `complete_from_ns` when the copy of `ring` (re)started at its first event:
    /// every event below that one had left the ring by then.
    complete_from_ns: u64,
}

/// The part of a stream copied by the steps so far ([`ImageCopier::step`]). A stream's
/// versions below the cut do not change while it exists, except the IDs of its newest
/// versions, which XSETID may lower (a suffix of the versions): so a copy continues where it
/// stopped as long as the stream's version there still has the LSN and ID copied.
#[derive(Default)]
struct PartialStream {
    lsns: Vec<u64>,
    ids: Vec<StreamId>,
    /// Copy the rest in one step: the stream changed under an earlier copy of it, and is
    /// copied over at once rather than risk that again.
    whole: bool,
}

impl PartialStream {
    fn continues(&self, e: &StreamEntry) -> bool {
        let Some(last) = self.lsns.len().checked_sub(1) else {
            return true;
        };
        e.lsns.get(last) == self.lsns.last() && e.ids.get(last) == self.ids.last()
    }
}

impl ImageCopier {
    pub(super) fn new<S: Storage + 'static>(part: &Partition<S>, lsn: u64) -> Self {
        let st = part.state.borrow();
        let names = st.streams.keys().cloned().collect();
        let next_ring_lsn = st.mem.ring.lsn_range().map_or(lsn, |(oldest, _)| oldest);
        let idem_ids = st.idem_order.iter().copied().collect();
        ImageCopier {
            lsn,
            names,
            next_name: 0,
            partial: None,
            streams: Vec::new(),
            stream_ids: Vec::new(),
            deleted: Vec::new(),
            meta: Vec::new(),
            groups: Vec::new(),
            ring: RingImage::default(),
            next_ring_lsn,
            ring_done: false,
            idem_ids,
            next_idem: 0,
            idem: Vec::new(),
            complete_from_ns: 0,
        }
    }

    /// Copies about `budget` more items; true when everything is copied.
    pub(super) fn step<S: Storage + 'static>(
        &mut self,
        part: &Partition<S>,
        budget: usize,
    ) -> bool {
        let st = part.state.borrow();
        let mut spent = 0usize;
        while self.next_name < self.names.len() && spent < budget {
            let name = &self.names[self.next_name];
            let Some(e) = st.streams.get(name) else {
                // Gone (deleted or renamed) since the copy began: so is what was copied of it.
                self.partial = None;
                self.next_name += 1;
                continue;
            };
            let n = e.visible_below(self.lsn);
            let mut part = self.partial.take().unwrap_or_default();
            if !part.continues(e) {
                // Deleted and made again, or its newest IDs lowered (XSETID), since the last
                // step: copied over, whole this time.
                part = PartialStream {
                    whole: true,
                    ..PartialStream::default()
                };
            }
            let from = part.lsns.len();
            assert!(
                from <= n,
                "a stream's versions below the cut stay while it exists"
            );
            let to = if part.whole {
                n
            } else {
                n.min(from.saturating_add(budget - spent))
            };
            if from == 0 {
                part.lsns.reserve_exact(n);
                part.ids.reserve_exact(n);
            }
            part.lsns.extend_from_slice(&e.lsns[from..to]);
            part.ids.extend_from_slice(&e.ids[from..to]);
            spent += to - from + 1;
            if to < n {
                self.partial = Some(part);
                break;
            }
            self.next_name += 1;
            // A stream with no version below the cut is kept when it exists without
            // versions (its groups made it).
            if n > 0 || e.groups.created {
                self.streams.push((name.clone(), part.lsns));
                self.stream_ids.push(part.ids);
                self.deleted.push(e.deleted.clone());
                self.meta.push(e.meta.clone());
                self.groups.push(e.groups.clone());
            }
        }
        if self.next_name < self.names.len() {
            return false;
        }
        if !self.ring_done {
            let mut copied = 0;
            for (taken, e) in st.mem.ring.iter_from(self.next_ring_lsn).enumerate() {
                if e.lsn >= self.lsn || spent + taken >= budget {
                    break;
                }
                if e.lsn != self.next_ring_lsn && !self.ring.is_empty() {
                    // Events were evicted during a yield: keep the copy contiguous (the
                    // restored ring must be) by starting over from here.
                    self.ring.clear();
                }
                if self.ring.is_empty() {
                    // `e` is the oldest event the ring holds now (the copy starts at the
                    // oldest, or over at the oldest after evictions): the value covers every
                    // event below it.
                    self.complete_from_ns = st.mem.ring.complete_from_ns();
                }
                self.ring.push(RingItem {
                    lsn: e.lsn,
                    stream_version: e.stream_version,
                    timestamp_ns: e.timestamp_ns,
                    value: e.value,
                    payload: e.payload,
                });
                self.next_ring_lsn = e.lsn + 1;
                copied += 1;
            }
            spent += copied;
            let finished = self.next_ring_lsn >= self.lsn
                || st
                    .mem
                    .ring
                    .lsn_range()
                    .is_none_or(|(_, newest)| self.next_ring_lsn > newest);
            if !finished {
                return false;
            }
            self.ring_done = true;
        }
        // The idempotency window, a slice at a time like the rest: an entry that left the
        // window meanwhile is not in the image (as one evicted before the copy began), and
        // one that entered it is above the cut.
        while self.next_idem < self.idem_ids.len() && spent < budget {
            let id = self.idem_ids[self.next_idem];
            self.next_idem += 1;
            spent += 1;
            if let Some(e) = st.idem.get(&id).filter(|e| e.lsn < self.lsn) {
                self.idem.push((id, e.stream.clone(), e.version, e.lsn));
            }
        }
        self.next_idem == self.idem_ids.len()
    }

    pub(super) fn finish<S: Storage + 'static>(self, part: &Partition<S>) -> PartitionImage {
        let st = part.state.borrow();
        let lsn = self.lsn;
        assert_eq!(
            self.next_idem,
            self.idem_ids.len(),
            "finished after the last step"
        );
        // No ring event copied: every event below the LSN has left the ring by now.
        let complete_from_ns = if self.ring.is_empty() {
            st.mem.ring.complete_from_ns()
        } else {
            self.complete_from_ns
        };
        PartitionImage {
            lsn,
            streams: self.streams,
            idem: self.idem,
            ring: self.ring,
            resume: part.journal.resume_point(lsn),
            complete_from_ns: Some(complete_from_ns),
            stream_ids: Some(self.stream_ids),
            deleted: Some(self.deleted),
            meta: Some(self.meta),
            groups: Some(self.groups),
        }
    }
}

/// Whose snapshots partition `p` of `store` loads.
pub fn partition_snapshot_owner(store: StoreId, p: u32) -> crate::snapshot::Owner {
    crate::snapshot::Owner {
        kind: crate::snapshot::KIND_PARTITION,
        codec: crate::snapshot::CODEC_BINARY,
        store_id: store,
        partition: p,
    }
}

/// Reads partition `p`'s snapshot file `path` (named for `lsn`) and checks it as recovery
/// does before using it: the file as every snapshot is checked ([`crate::snapshot::read_checked`]:
/// header, both checksums, kind, codec, store id, partition, the LSN in the file name and
/// header), then [`partition_image_of`].
pub fn read_partition_snapshot(
    path: &std::path::Path,
    lsn: u64,
    store: StoreId,
    p: u32,
) -> Result<PartitionImage, ImageError> {
    let loaded = crate::snapshot::read_checked(path, lsn, &partition_snapshot_owner(store, p))?;
    partition_image_of(&loaded)
}

/// The image in a checked snapshot file's body: it decodes, names the header's LSN, and its
/// contents are within it ([`PartitionImage::check`]).
pub fn partition_image_of(loaded: &crate::snapshot::Loaded) -> Result<PartitionImage, ImageError> {
    let image = PartitionImage::decode(&loaded.body)?;
    if image.lsn != loaded.meta.lsn {
        return Err(ImageError::BodyLsn);
    }
    image.check()?;
    Ok(image)
}

/// A stream's version LSNs must all be below the image's LSN.
pub(super) fn check_stream_lsns(
    name: &str,
    lsns: &[u64],
    image_lsn: u64,
) -> Result<(), ImageError> {
    if lsns.last().is_some_and(|&l| l >= image_lsn) {
        return Err(ImageError::StreamBeyondImage(name.to_string()));
    }
    Ok(())
}

impl PartitionImage {
    /// Frees the image on the thread that copied it, a slice of items at a time, yielding
    /// between slices so the shard serves between them. An image is copied on its
    /// partition's shard, so its blocks come from that thread's allocator arena: freed on
    /// another thread, each free takes that arena's lock, and the shard's own allocations
    /// wait for it.
    pub async fn free_yielding(self) {
        let PartitionImage {
            streams,
            idem,
            ring,
            stream_ids,
            deleted,
            meta,
            groups,
            ..
        } = self;
        drop(ring);
        free_slices(streams).await;
        free_slices(idem).await;
        free_slices(stream_ids.unwrap_or_default()).await;
        free_slices(deleted.unwrap_or_default()).await;
        free_slices(meta.unwrap_or_default()).await;
        free_slices(groups.unwrap_or_default()).await;
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = postcard::to_allocvec(self).expect("an image always encodes");
        if let Some(complete_from_ns) = self.complete_from_ns {
            let trailer = ImageTrailer { complete_from_ns };
            out.extend(postcard::to_allocvec(&trailer).expect("a trailer always encodes"));
            if let Some(stream_ids) = &self.stream_ids {
                let ids = IdTrailer {
                    stream_ids: stream_ids.clone(),
                };
                out.extend(postcard::to_allocvec(&ids).expect("a trailer always encodes"));
                if let Some(deleted) = &self.deleted {
                    let d = DeletedTrailer {
                        deleted: deleted.clone(),
                    };
                    out.extend(postcard::to_allocvec(&d).expect("a trailer always encodes"));
                    if let Some(meta) = &self.meta {
                        let m = MetaTrailer { meta: meta.clone() };
                        out.extend(postcard::to_allocvec(&m).expect("a trailer always encodes"));
                        if let Some(groups) = &self.groups {
                            let g = GroupTrailer {
                                groups: groups.clone(),
                            };
                            out.extend(
                                postcard::to_allocvec(&g).expect("a trailer always encodes"),
                            );
                        }
                    }
                }
            }
        }
        out
    }
    pub fn decode(bytes: &[u8]) -> Result<PartitionImage, ImageError> {
        let (mut image, rest): (PartitionImage, _) =
            postcard::take_from_bytes(bytes).map_err(ImageError::Undecodable)?;
        if !rest.is_empty() {
            let (trailer, rest): (ImageTrailer, _) =
                postcard::take_from_bytes(rest).map_err(ImageError::UndecodableTrailer)?;
            image.complete_from_ns = Some(trailer.complete_from_ns);
            if !rest.is_empty() {
                let (ids, rest): (IdTrailer, _) =
                    postcard::take_from_bytes(rest).map_err(ImageError::UndecodableTrailer)?;
                image.stream_ids = Some(ids.stream_ids);
                if !rest.is_empty() {
                    let (d, rest): (DeletedTrailer, _) =
                        postcard::take_from_bytes(rest).map_err(ImageError::UndecodableTrailer)?;
                    image.deleted = Some(d.deleted);
                    if !rest.is_empty() {
                        let (m, rest): (MetaTrailer, _) = postcard::take_from_bytes(rest)
                            .map_err(ImageError::UndecodableTrailer)?;
                        image.meta = Some(m.meta);
                        if !rest.is_empty() {
                            let g: GroupTrailer = postcard::from_bytes(rest)
                                .map_err(ImageError::UndecodableTrailer)?;
                            image.groups = Some(g.groups);
                        }
                    }
                }
            }
        }
        Ok(image)
    }
    /// Whether recovery from this image must scan the journal from its first segment: the
    /// image does not say what time the events below its ring reach (a file written before
    /// `complete_from_ns`), and there are such events.
    pub fn needs_full_scan(&self) -> bool {
        self.complete_from_ns.is_none() && self.events() > self.ring.len() as u64
    }
    /// Checks what [`Rebuild::from_image`] relies on, without building anything: every
    /// stream's LSNs are below the image's, every ring payload holds the fields it claims.
    pub fn check(&self) -> Result<(), ImageError> {
        for (name, lsns) in &self.streams {
            check_stream_lsns(name, lsns, self.lsn)?;
        }
        if self
            .deleted
            .as_ref()
            .is_some_and(|d| d.len() != self.streams.len())
            || self
                .meta
                .as_ref()
                .is_some_and(|m| m.len() != self.streams.len())
            || self
                .groups
                .as_ref()
                .is_some_and(|g| g.len() != self.streams.len())
        {
            return Err(ImageError::StreamIds(None));
        }
        if let Some(ids) = &self.stream_ids {
            if ids.len() != self.streams.len() {
                return Err(ImageError::StreamIds(None));
            }
            for ((name, lsns), ids) in self.streams.iter().zip(ids) {
                // IDs never decrease (a repeat is a deleted version's, see `change`).
                if ids.len() != lsns.len() || ids.windows(2).any(|w| w[0] > w[1]) {
                    return Err(ImageError::StreamIds(Some(name.clone())));
                }
            }
        }
        // An empty payload is a placeholder (a stream change's slot).
        for item in self.ring.iter().filter(|item| !item.payload.is_empty()) {
            RingFields::parse(item.payload).map_err(|source| ImageError::RingEvent {
                lsn: item.lsn,
                source,
            })?;
        }
        Ok(())
    }
    /// Events the image holds.
    pub fn events(&self) -> u64 {
        self.streams.iter().map(|(_, l)| l.len() as u64).sum()
    }
}

impl Rebuild {
    pub fn new(idempotency_window: usize, ring_config: RingConfig) -> Self {
        Rebuild {
            streams: Default::default(),
            idem: VecDeque::new(),
            window: idempotency_window,
            mem: InMemory::new(ring_config),
            events: 0,
            from_lsn: 0,
            first_seen: None,
            left_out_below: 0,
        }
    }

    /// Starts from a snapshot's image; the journal scan then adds what follows it.
    pub fn from_image(
        image: PartitionImage,
        idempotency_window: usize,
        ring_config: RingConfig,
    ) -> Result<Self, ImageError> {
        let mut r = Rebuild::new(idempotency_window, ring_config);
        r.from_lsn = image.lsn;
        match image.complete_from_ns {
            Some(0) => {}
            Some(from) => r.mem.ring.note_left_out(from - 1),
            None if image.needs_full_scan() => {
                r.left_out_below = image.ring.first_lsn().unwrap_or(image.lsn);
            }
            None => {}
        }
        image.check()?;
        let mut ids = image.stream_ids.map(Vec::into_iter);
        let mut deleted = image.deleted.map(Vec::into_iter);
        let mut meta = image.meta.map(Vec::into_iter);
        let mut groups = image.groups.map(Vec::into_iter);
        for (name, lsns) in image.streams {
            let ids = match ids.as_mut() {
                Some(ids) => ids.next().expect("checked: one ID list per stream"),
                None => (0..lsns.len() as u64).map(StreamId::legacy).collect(),
            };
            let deleted = deleted
                .as_mut()
                .and_then(Iterator::next)
                .unwrap_or_default();
            let meta = meta.as_mut().and_then(Iterator::next).unwrap_or_default();
            let groups = groups.as_mut().and_then(Iterator::next).unwrap_or_default();
            r.streams.insert(
                name,
                StreamEntry::from_parts(lsns, ids, deleted, meta, groups),
            );
        }
        for (id, stream, version, lsn) in image.idem {
            if r.window > 0 {
                if r.idem.len() == r.window {
                    r.idem.pop_front();
                }
                r.idem.push_back((
                    id,
                    IdemEntry {
                        stream,
                        version,
                        lsn,
                    },
                ));
            }
        }
        for item in image.ring.iter() {
            if item.payload.is_empty() {
                r.mem.push_placeholder(item.lsn);
                continue;
            }
            let f = RingFields::parse(item.payload).map_err(|source| ImageError::RingEvent {
                lsn: item.lsn,
                source,
            })?;
            r.mem.push(
                item.lsn,
                &RecordRef {
                    kind: RECORD_KIND_EVENT,
                    id: None,
                    stream_version: item.stream_version,
                    timestamp_ns: item.timestamp_ns,
                    event_id: f.event_id,
                    value: item.value,
                    stream: f.stream,
                    event_type: f.event_type,
                    data: f.data,
                    metadata: f.metadata,
                },
            );
        }
        Ok(r)
    }

    /// Feeds one recovered frame.
    pub fn frame(&mut self, info: &FrameInfo, frame: &[u8]) {
        let body = &frame[96..96 + info.meta.body_len as usize];
        for record in RecordIter::new(body).flatten() {
            if record.lsn < self.from_lsn {
                if record.lsn < self.left_out_below && record.record.kind == RECORD_KIND_EVENT {
                    self.mem.ring.note_left_out(record.record.timestamp_ns);
                }
                continue;
            }
            self.first_seen.get_or_insert(record.lsn);
            if record.record.kind == RECORD_KIND_CHANGE {
                let stream = String::from_utf8_lossy(record.record.stream);
                let Some(change) = StreamChange::decode(record.record.data) else {
                    // Checksummed and written by a version that knows no such change.
                    panic!(
                        "the stream change record at LSN {} does not decode: the journal was \
                         written by a newer version of evringd",
                        record.lsn
                    );
                };
                apply_change(&mut self.streams, &stream, &change);
                self.mem.push_placeholder(record.lsn);
                continue;
            }
            if record.record.kind != RECORD_KIND_EVENT {
                continue;
            }
            let stream = String::from_utf8_lossy(record.record.stream).into_owned();
            let entry = self.streams.entry_or_default(&stream);
            if entry.lsns.is_empty() {
                entry.meta.kind = super::StreamKind::of_event(record.record.event_type);
            }
            let version = record.record.stream_version;
            entry.push(
                record.lsn,
                record.record.id.unwrap_or(StreamId::legacy(version)),
            );
            self.events += 1;
            self.mem.push(record.lsn, &record.record);
            if record.record.event_id != [0; 16] && self.window > 0 {
                if self.idem.len() == self.window {
                    self.idem.pop_front();
                }
                self.idem.push_back((
                    record.record.event_id,
                    IdemEntry {
                        stream,
                        version: record.record.stream_version,
                        lsn: record.lsn,
                    },
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Resume;

    fn image(complete_from_ns: Option<u64>) -> PartitionImage {
        let payload = |stream: &str| {
            let mut p = Vec::new();
            p.extend_from_slice(&(stream.len() as u16).to_le_bytes());
            p.extend_from_slice(&1u16.to_le_bytes());
            p.extend_from_slice(&0u32.to_le_bytes());
            p.extend_from_slice(&0u32.to_le_bytes());
            p.extend_from_slice(&[0; 16]);
            p.extend_from_slice(stream.as_bytes());
            p.extend_from_slice(b"t");
            p
        };
        // LSN 0 is no longer in the ring.
        let mut ring = RingImage::default();
        for lsn in 1..3 {
            ring.push(RingItem {
                lsn,
                stream_version: lsn,
                timestamp_ns: 100 + lsn,
                value: 1.0,
                payload: &payload("s"),
            });
        }
        PartitionImage {
            lsn: 3,
            streams: vec![("s".into(), vec![0, 1, 2])],
            idem: Vec::new(),
            ring,
            resume: Resume {
                first_segment: 0,
                index: Vec::new(),
            },
            complete_from_ns,
            stream_ids: None,
            deleted: None,
            meta: None,
            groups: None,
        }
    }

    #[test]
    fn complete_from_travels_after_the_body_and_older_files_lack_it() {
        let new = image(Some(500)).encode();
        let old = image(None).encode();
        assert!(new.len() > old.len() && new.starts_with(&old));
        assert_eq!(
            PartitionImage::decode(&new).unwrap().complete_from_ns,
            Some(500)
        );
        // An older reader decodes the body and ignores what follows.
        let older: PartitionImage = postcard::from_bytes(&new).unwrap();
        assert_eq!((older.lsn, older.ring.len()), (3, 2));
        // A file from before the field: unknown, and its ring lacks LSN 0.
        let decoded = PartitionImage::decode(&old).unwrap();
        assert_eq!(decoded.complete_from_ns, None);
        assert!(decoded.needs_full_scan());
        assert!(!PartitionImage::decode(&new).unwrap().needs_full_scan());
        // Garbage after the body is refused, not read as a value.
        let mut bad = old.clone();
        bad.push(0xff);
        assert!(PartitionImage::decode(&bad).is_err());
    }

    #[test]
    fn a_rebuild_starts_from_the_image_value() {
        let cfg = RingConfig::default();
        let r = Rebuild::from_image(image(Some(500)), 10, cfg).unwrap();
        assert_eq!(r.mem.ring.complete_from_ns(), 500);
        let r = Rebuild::from_image(image(Some(0)), 10, cfg).unwrap();
        assert_eq!(r.mem.ring.complete_from_ns(), 0);
        // An older file: the journal scan below the ring's first LSN supplies it.
        let r = Rebuild::from_image(image(None), 10, cfg).unwrap();
        assert_eq!((r.mem.ring.complete_from_ns(), r.left_out_below), (0, 1));
        // A smaller ring than the image's evicts, and counts what it evicts.
        let small = RingConfig {
            capacity_events: 1,
            ..cfg
        };
        let r = Rebuild::from_image(image(Some(50)), 10, small).unwrap();
        assert_eq!(r.mem.ring.complete_from_ns(), 102);
    }

    /// One ring event as images encoded it when each event owned its payload.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct OwnedItem {
        lsn: u64,
        stream_version: u64,
        timestamp_ns: u64,
        value: f64,
        payload: Vec<u8>,
    }

    #[test]
    fn a_flat_ring_encodes_and_decodes_as_a_list_of_items_that_own_their_payloads() {
        // Payloads of every length up to 300 (a length of 128 or more takes two bytes).
        let owned: Vec<OwnedItem> = (0..300u64)
            .map(|i| OwnedItem {
                lsn: 7 + i,
                stream_version: i * 3,
                timestamp_ns: 1_000 + i,
                value: i as f64 / 2.0,
                payload: (0..i).map(|b| (b * 7 + i) as u8).collect(),
            })
            .collect();
        let mut flat = RingImage::default();
        for o in &owned {
            flat.push(RingItem {
                lsn: o.lsn,
                stream_version: o.stream_version,
                timestamp_ns: o.timestamp_ns,
                value: o.value,
                payload: &o.payload,
            });
        }
        let bytes = postcard::to_allocvec(&owned).unwrap();
        assert_eq!(postcard::to_allocvec(&flat).unwrap(), bytes);
        let back: RingImage = postcard::from_bytes(&bytes).unwrap();
        let again: Vec<OwnedItem> = back
            .iter()
            .map(|r| OwnedItem {
                lsn: r.lsn,
                stream_version: r.stream_version,
                timestamp_ns: r.timestamp_ns,
                value: r.value,
                payload: r.payload.to_vec(),
            })
            .collect();
        assert_eq!(again, owned);
        assert_eq!(back.first_lsn(), Some(7));
    }

    mod sliced {
        use super::super::*;
        use crate::journal::{Journal, JournalConfig, SimStorage};
        use crate::protocol::{expected, Direction};
        use crate::stream::{ChangeRequest, IdSpec, PartitionLimits, TxWrite};

        const STORE: [u8; 16] = *b"evring-img-test!";

        /// The server's defaults, with a small ring (older versions are read from the
        /// journal).
        fn limits() -> PartitionLimits {
            let defaults = crate::config::Config::default();
            PartitionLimits {
                idempotency_window: 100,
                ring: RingConfig {
                    capacity_events: 64,
                    capacity_bytes: 16 * 1024,
                    max_retries: 8,
                },
                ..crate::server::partition_limits(&defaults).unwrap()
            }
        }

        /// Partition 0 on `storage`, from `image` and the journal after it (or the journal).
        async fn open(storage: SimStorage, image: Option<&[u8]>) -> Partition<SimStorage> {
            let (mut rebuild, resume) = match image {
                Some(bytes) => {
                    let image = PartitionImage::decode(bytes).unwrap();
                    let resume = image.resume.clone();
                    let rebuild = Rebuild::from_image(image, 100, limits().ring).unwrap();
                    (rebuild, Some(resume))
                }
                None => (Rebuild::new(100, limits().ring), None),
            };
            let cfg = JournalConfig::new(STORE, 0);
            let (journal, _) = Journal::open_resuming(storage, cfg, resume, |info, frame| {
                rebuild.frame(info, frame)
            })
            .await
            .unwrap();
            Partition::new(0, journal, rebuild, limits())
        }

        fn event(i: usize) -> crate::protocol::Event {
            crate::client::event("T", format!("event {i}").into_bytes())
        }

        /// Every stream's events (data) and stream IDs as `part` serves them.
        async fn contents(
            part: &Partition<SimStorage>,
        ) -> Vec<(String, Vec<Vec<u8>>, Vec<StreamId>)> {
            let mut out = Vec::new();
            for name in ["big", "small"] {
                let events = match part.read(name, 0, u32::MAX, Direction::Forward).await {
                    Ok((events, _)) => events,
                    Err(crate::stream::StreamError::StreamNotFound(_)) => Vec::new(),
                    Err(e) => panic!("read {name}: {e:?}"),
                };
                let ids = part.stream_ids(name, 0..events.len() as u64);
                let datas = events.into_iter().map(|e| e.event.data).collect();
                out.push((name.to_string(), datas, ids));
            }
            out
        }

        /// A copy that stops inside a stream of more versions than a slice takes, with
        /// `between` run after that first slice: the image, with the journal after it,
        /// recovers the partition as it is served.
        async fn sliced_copy_recovers(remake: bool) {
            let storage = SimStorage::new(5);
            let part = open(storage.clone(), None).await;
            for b in 0..10 {
                let events = (0..10).map(|i| event(b * 10 + i)).collect();
                part.append("big", expected::ANY, events).await.unwrap();
            }
            part.append("small", expected::ANY, vec![event(0)])
                .await
                .unwrap();
            let lsn = part.state.borrow().published_lsn;
            let mut copier = ImageCopier::new(&part, lsn);
            let mut inside = false;
            while !copier.step(&part, 30) {
                if inside || copier.partial.is_none() {
                    continue;
                }
                inside = true;
                if remake {
                    // Deleted and made again between two slices of its copy.
                    let writes = vec![
                        TxWrite::Change {
                            stream: "big".into(),
                            request: ChangeRequest::DeleteStream,
                        },
                        TxWrite::Append {
                            stream: "big".into(),
                            expected_version: expected::NO_STREAM,
                            events: vec![event(1000)],
                            id: IdSpec::Auto,
                        },
                    ];
                    for done in part.transaction(writes).await {
                        done.unwrap();
                    }
                } else {
                    part.append("big", expected::ANY, vec![event(100)])
                        .await
                        .unwrap();
                }
            }
            assert!(inside, "the copy stopped inside the big stream");
            let image = copier.finish(&part).encode();
            let live = contents(&part).await;
            assert_eq!(live[0].1.len(), if remake { 1 } else { 101 });
            let recovered = open(storage.crash_image(), Some(&image)).await;
            assert_eq!(contents(&recovered).await, live);
        }

        #[test]
        fn the_idempotency_window_is_copied_in_slices_without_what_leaves_it_meanwhile() {
            crate::shard::run_local(async {
                let storage = SimStorage::new(9);
                let part = open(storage.clone(), None).await;
                let with_id = |i: usize| {
                    let mut e = event(i);
                    e.id = [0; 16];
                    e.id[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                    e
                };
                for i in 0..80 {
                    part.append("small", expected::ANY, vec![with_id(i)])
                        .await
                        .unwrap();
                }
                let lsn = part.state.borrow().published_lsn;
                let mut copier = ImageCopier::new(&part, lsn);
                let ids = copier.idem_ids.clone();
                assert_eq!(ids.len(), 80);
                let mut copied_before = None;
                while !copier.step(&part, 10) {
                    if copied_before.is_some() || copier.next_idem == 0 {
                        continue;
                    }
                    copied_before = Some(copier.next_idem);
                    // 40 more: the window (100) lets the 20 oldest go, some copied already.
                    for i in 80..120 {
                        part.append("small", expected::ANY, vec![with_id(i)])
                            .await
                            .unwrap();
                    }
                }
                let k = copied_before.expect("the copy stopped inside the window");
                assert!(k < 20, "some of the 20 that left were not copied yet ({k})");
                let image = copier.finish(&part);
                let got: Vec<[u8; 16]> = image.idem.iter().map(|e| e.0).collect();
                let want: Vec<[u8; 16]> = ids[..k].iter().chain(&ids[20..]).copied().collect();
                assert_eq!(got, want);
                assert!(image.idem.iter().all(|e| e.3 < lsn && e.1 == "small"));
                // Recovery from it and the journal after it serves what the partition does.
                let live = contents(&part).await;
                let recovered = open(storage.crash_image(), Some(&image.encode())).await;
                assert_eq!(contents(&recovered).await, live);
            });
        }

        #[test]
        fn a_stream_copied_over_several_slices_while_it_grows_recovers_whole() {
            crate::shard::run_local(sliced_copy_recovers(false));
        }

        #[test]
        fn a_stream_deleted_and_made_again_between_slices_of_its_copy_recovers_as_made_again() {
            crate::shard::run_local(sliced_copy_recovers(true));
        }
    }
}

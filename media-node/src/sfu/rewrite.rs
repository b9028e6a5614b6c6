//! What a subscriber's receiver needs to see one clean stream while the node forwards RTP
//! packets as they came (RTP mode) and switches between a publisher's simulcast layers: each
//! layer has its own SSRC, sequence numbers, timestamps and VP8 picture ids, and the receiver
//! must see none of those jumps. Pure logic: the engine feeds it each forwarded packet.

use std::time::{Duration, Instant};

use str0m::format::{self, Codec};
use str0m::rtp::{Ssrc, Vp8Descriptor, Vp8Patch};

/// H.264's sequence parameter set: a keyframe that carries its parameters starts with it.
const H264_SPS: u8 = 7;

/// Whether `payload` (of a video packet in `codec`) is the first packet of a keyframe: where a
/// receiver can start decoding, so where a subscriber may be switched to its layer.
pub fn starts_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => format::detect_vp8_keyframe(payload),
        Codec::Vp9 => format::detect_vp9_keyframe(payload),
        Codec::Av1 => format::detect_av1_keyframe(payload),
        Codec::H265 => format::detect_h265_keyframe(payload),
        // The parameter sets come first, in their own packet, when they are not aggregated
        // with the IDR slice.
        Codec::H264 => {
            format::detect_h264_nalu(payload, H264_SPS) || format::detect_h264_keyframe(payload)
        }
        _ => false,
    }
}

/// VP8 picture ids are 15 bits (7 in the short form), TL0PICIDX 8.
const PICTURE_ID_SPAN: u32 = 1 << 15;
const SHORT_PICTURE_ID_SPAN: u32 = 1 << 7;

/// One forwarded packet's place in the subscriber's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Extended sequence number (no rollover before the first 65,536 packets).
    pub seq: u64,
    pub timestamp: u32,
    /// VP8 only: picture id and TL0PICIDX continued across switches.
    pub vp8: Option<Vp8Patch>,
}

/// What the rewriter needs to know of one incoming packet.
#[derive(Debug, Clone, Copy)]
pub struct Incoming {
    pub ssrc: Ssrc,
    /// Changes when the node resumes forwarding a stream it paused (a mute): the packets the
    /// publisher sent meanwhile are not a gap in the subscriber's stream.
    pub run: u32,
    /// Extended sequence number, as str0m gives it.
    pub seq: u64,
    pub timestamp: u32,
    pub arrived: Instant,
    /// The codec's RTP clock, for the timestamp gap across a switch.
    pub clock_rate: u32,
    pub vp8: Option<Vp8Descriptor>,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: Ssrc,
    run: u32,
    /// The first packet forwarded from it: anything older belongs before the switch.
    first_seq: u64,
    seq_offset: u64,
    timestamp_offset: u32,
    picture_id_offset: u32,
    tl0_offset: u8,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    seq: u64,
    timestamp: u32,
    at: Instant,
    picture_id: Option<u32>,
    tl0: Option<u8>,
}

/// One outgoing track's continuity across the incoming streams it is fed from.
#[derive(Debug, Default, Clone)]
pub struct Rewriter {
    source: Option<Source>,
    last: Option<Last>,
}

impl Rewriter {
    /// Whether `packet` is its stream's first after a pause the node imposed (the same
    /// incoming stream, a new run): what the publisher encoded meanwhile never reached this
    /// subscriber, so its video can go on only from a keyframe.
    pub fn resumes(&self, packet: &Incoming) -> bool {
        self.source
            .is_some_and(|s| s.ssrc == packet.ssrc && s.run != packet.run)
    }

    /// The next packet starts a new run right after the last one sent: the packets between
    /// were held back before they were numbered (a send queue too deep), so the receiver
    /// sees no gap to ask for again.
    pub fn restart(&mut self) {
        self.source = None;
    }

    /// Where `packet` goes in the subscriber's stream; `None` for a packet from before the
    /// current layer began (a late packet of the layer switched away from, or a resend of one
    /// older than the switch), which the receiver must not see.
    ///
    /// The caller switches layers only on a keyframe's first packet; a packet from a new SSRC
    /// starts a new run right after the last one sent.
    pub fn rewrite(&mut self, packet: &Incoming) -> Option<Rewritten> {
        let source = match self.source {
            Some(s) if s.ssrc == packet.ssrc && s.run == packet.run => s,
            _ => self.start(packet),
        };
        if packet.seq < source.first_seq {
            return None;
        }
        let seq = packet.seq.wrapping_add(source.seq_offset);
        let timestamp = packet.timestamp.wrapping_add(source.timestamp_offset);
        let vp8 = packet.vp8.and_then(|d| patch(&d, &source));
        let newest = self.last.is_none_or(|l| seq > l.seq);
        if newest {
            self.last = Some(Last {
                seq,
                timestamp,
                at: packet.arrived,
                picture_id: packet
                    .vp8
                    .and_then(|d| d.picture_id())
                    .map(|p| (u32::from(p) + source.picture_id_offset) % PICTURE_ID_SPAN),
                tl0: packet
                    .vp8
                    .and_then(|d| d.tl0_pic_idx())
                    .map(|t| t.wrapping_add(source.tl0_offset)),
            });
        }
        Some(Rewritten {
            seq,
            timestamp,
            vp8,
        })
    }

    /// A new incoming stream: its first packet follows the last one sent, one sequence
    /// number, the time that passed, and one picture later.
    fn start(&mut self, packet: &Incoming) -> Source {
        let source = match self.last {
            // The very first packet: keep its numbers, without the rollover count str0m's
            // extended number may carry (a new outgoing stream starts at rollover 0).
            None => Source {
                ssrc: packet.ssrc,
                run: packet.run,
                first_seq: packet.seq,
                seq_offset: (packet.seq & 0xffff).wrapping_sub(packet.seq),
                timestamp_offset: 0,
                picture_id_offset: 0,
                tl0_offset: 0,
            },
            Some(last) => {
                let gap = packet.arrived.saturating_duration_since(last.at);
                let ticks = ticks(gap, packet.clock_rate).max(1);
                let picture = packet.vp8.and_then(|d| d.picture_id()).map(u32::from);
                let tl0 = packet.vp8.and_then(|d| d.tl0_pic_idx());
                Source {
                    ssrc: packet.ssrc,
                    run: packet.run,
                    first_seq: packet.seq,
                    seq_offset: (last.seq + 1).wrapping_sub(packet.seq),
                    timestamp_offset: last
                        .timestamp
                        .wrapping_add(ticks)
                        .wrapping_sub(packet.timestamp),
                    picture_id_offset: match (last.picture_id, picture) {
                        (Some(l), Some(p)) => (l + 1 + PICTURE_ID_SPAN - p) % PICTURE_ID_SPAN,
                        _ => 0,
                    },
                    tl0_offset: match (last.tl0, tl0) {
                        (Some(l), Some(t)) => l.wrapping_add(1).wrapping_sub(t),
                        _ => 0,
                    },
                }
            }
        };
        self.source = Some(source);
        source
    }
}

/// RTP clock ticks in `gap`.
fn ticks(gap: Duration, clock_rate: u32) -> u32 {
    (gap.as_micros() * u128::from(clock_rate) / 1_000_000).min(u128::from(u32::MAX)) as u32
}

/// The descriptor's picture id and TL0PICIDX moved by the source's offsets; `None` when
/// nothing moves (the first stream) or the descriptor has neither field.
fn patch(descriptor: &Vp8Descriptor, source: &Source) -> Option<Vp8Patch> {
    if source.picture_id_offset == 0 && source.tl0_offset == 0 {
        return None;
    }
    // Picture ids wrap at `span`: 15 bits, or 7 in the short form, which a 15-bit value
    // does not fit.
    let moved_within = |span: u32| {
        let mut builder = descriptor.patch();
        if let Some(p) = descriptor.picture_id() {
            let moved = (u32::from(p) + source.picture_id_offset) % span;
            builder = builder.picture_id(moved as u16);
        }
        if let Some(t) = descriptor.tl0_pic_idx() {
            builder = builder.tl0_pic_idx(t.wrapping_add(source.tl0_offset));
        }
        builder.build().ok()
    };
    moved_within(PICTURE_ID_SPAN).or_else(|| moved_within(SHORT_PICTURE_ID_SPAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 payload: the descriptor with a 15-bit picture id and TL0PICIDX, then a frame tag.
    fn vp8(picture_id: u16, tl0: u8, key: bool) -> Vec<u8> {
        let mut p = vec![
            0x90, // X, S, partition 0
            0xe0, // I, L, T
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            tl0,
            0x00, // TID 0
        ];
        p.push(if key { 0x00 } else { 0x01 });
        p.extend_from_slice(&[0; 20]);
        p
    }

    fn packet(ssrc: u32, seq: u64, ts: u32, at: Instant, payload: &[u8]) -> Incoming {
        Incoming {
            ssrc: ssrc.into(),
            run: 0,
            seq,
            timestamp: ts,
            arrived: at,
            clock_rate: 90_000,
            vp8: Vp8Descriptor::parse(payload).ok(),
        }
    }

    /// The patch that gives the receiver `picture_id` and `tl0` in `payload`.
    fn moved_to(payload: &[u8], picture_id: u16, tl0: u8) -> Option<Vp8Patch> {
        let d = Vp8Descriptor::parse(payload).expect("descriptor");
        Some(
            d.patch()
                .picture_id(picture_id)
                .tl0_pic_idx(tl0)
                .build()
                .expect("patch"),
        )
    }

    #[test]
    fn a_switch_to_another_layer_continues_sequence_time_and_picture_ids() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        // Layer "q": five packets, one per frame.
        let mut outs = Vec::new();
        for i in 0..5u64 {
            let payload = vp8(100 + i as u16, 7, i == 0);
            let at = t0 + Duration::from_millis(33 * i);
            let out = r
                .rewrite(&packet(
                    1,
                    70_000 + i,
                    1_000 + 3_000 * i as u32,
                    at,
                    &payload,
                ))
                .expect("forwarded");
            assert_eq!(out.vp8, None, "the first layer's picture ids are kept");
            outs.push(out);
        }
        // The first packet keeps its numbers, without str0m's rollover count.
        assert_eq!(outs[0].seq, 70_000 & 0xffff);
        assert_eq!(outs[4].seq, (70_000 & 0xffff) + 4);
        // Layer "f" starts on a keyframe 33 ms later, with numbers of its own.
        let at = t0 + Duration::from_millis(33 * 5);
        let key = vp8(30_000, 200, true);
        let switched = r
            .rewrite(&packet(2, 5, 900_000, at, &key))
            .expect("forwarded");
        assert_eq!(switched.seq, outs[4].seq + 1, "no gap, no repeat");
        assert_eq!(
            switched.timestamp,
            outs[4].timestamp + 2_970,
            "33 ms at 90 kHz after the last"
        );
        assert_eq!(
            switched.vp8,
            moved_to(&key, 105, 8),
            "the next picture id and TL0PICIDX"
        );
        // And goes on from there.
        let next = vp8(30_001, 200, false);
        let after = r
            .rewrite(&packet(2, 6, 903_000, at, &next))
            .expect("forwarded");
        assert_eq!(after.seq, switched.seq + 1);
        assert_eq!(after.timestamp, switched.timestamp + 3_000);
        assert_eq!(after.vp8, moved_to(&next, 106, 8));
    }

    #[test]
    fn packets_from_before_the_switch_are_not_forwarded_but_later_resends_are() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        let delta = vp8(10, 1, false);
        for i in 0..3 {
            assert!(r.rewrite(&packet(1, 100 + i, 0, t0, &delta)).is_some());
        }
        let key = vp8(500, 9, true);
        let first = r.rewrite(&packet(2, 1_000, 0, t0, &key)).expect("switch");
        assert_eq!(first.seq, 103);
        // A late packet of the new layer from before its keyframe: the receiver never saw
        // the run it belongs to.
        assert_eq!(r.rewrite(&packet(2, 999, 0, t0, &delta)), None);
        // A lost packet of the new layer, resent after later ones: its own place, once.
        assert!(r.rewrite(&packet(2, 1_002, 0, t0, &delta)).is_some());
        let resent = r.rewrite(&packet(2, 1_001, 0, t0, &delta)).expect("resent");
        assert_eq!(resent.seq, 104);
    }

    #[test]
    fn only_the_first_packet_of_a_keyframe_starts_one() {
        assert!(starts_keyframe(Codec::Vp8, &vp8(1, 1, true)));
        assert!(!starts_keyframe(Codec::Vp8, &vp8(1, 1, false)));
        // The same keyframe's second packet: no start-of-partition bit.
        let mut middle = vp8(1, 1, true);
        middle[0] &= !0x10;
        assert!(!starts_keyframe(Codec::Vp8, &middle));
        // H.264: a lone SPS, an IDR slice, and a P slice.
        assert!(starts_keyframe(Codec::H264, &[0x67, 0x42, 0x00, 0x1f]));
        assert!(starts_keyframe(Codec::H264, &[0x65, 0x88, 0x84]));
        assert!(!starts_keyframe(Codec::H264, &[0x41, 0x9a, 0x02]));
        assert!(!starts_keyframe(Codec::Opus, &[0x00; 8]));
    }

    /// A sender using 7-bit picture ids: the continued id wraps within 7 bits (127, then 0).
    #[test]
    fn short_picture_ids_are_continued_within_seven_bits() {
        let t0 = Instant::now();
        let short = |picture_id: u8, tl0: u8| {
            // X, S; I, L, T; a 7-bit picture id; TL0PICIDX; TID 0; a keyframe.
            let mut p = vec![0x90, 0xe0, picture_id & 0x7f, tl0, 0x00, 0x00];
            p.extend_from_slice(&[0; 20]);
            p
        };
        let mut r = Rewriter::default();
        r.rewrite(&packet(1, 100, 1_000, t0, &short(127, 9)))
            .expect("out");
        let next = short(5, 40);
        let out = r
            .rewrite(&packet(
                2,
                500,
                7_000,
                t0 + Duration::from_millis(33),
                &next,
            ))
            .expect("out");
        assert_eq!(out.vp8, moved_to(&next, 0, 10));
    }

    #[test]
    fn a_stream_that_is_never_switched_passes_unchanged() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        let payload = vp8(42, 3, false);
        let out = r
            .rewrite(&packet(7, 1_234, 5_678, t0, &payload))
            .expect("out");
        assert_eq!((out.seq, out.timestamp, out.vp8), (1_234, 5_678, None));
    }

    /// A host mutes a patient for 2 s: the 100 audio packets the patient's browser sent
    /// meanwhile never reach the others, whose streams go on at the next sequence number, the
    /// time that passed later (so their receivers count no loss and ask for no resend), and a
    /// late packet from before the mute is not sent.
    #[test]
    fn a_stream_the_node_paused_goes_on_without_a_gap() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        let opus = |seq: u64, ts: u32, at: Instant, run: u32| Incoming {
            run,
            clock_rate: 48_000,
            ..packet(9, seq, ts, at, &[0xfc])
        };
        r.rewrite(&opus(500, 96_000, t0, 0)).expect("out");
        let later = t0 + Duration::from_secs(2);
        let resumed = r.rewrite(&opus(601, 192_960, later, 1)).expect("out");
        assert_eq!((resumed.seq, resumed.timestamp), (501, 192_000));
        assert_eq!(r.rewrite(&opus(499, 95_040, later, 1)), None);
        let next = r
            .rewrite(&opus(602, 193_920, later + Duration::from_millis(20), 1))
            .expect("out");
        assert_eq!((next.seq, next.timestamp), (502, 192_960));
    }
}

"""An aiortc participant for the media-node interop test, driven over stdin/stdout.

The Rust test owns signaling (the WebSocket to the node); this process owns the WebRTC stack.
Lines in and out are JSON:
  out {"type":"offer","sdp":...}          first thing printed: publish a synthetic camera + mic
  in  {"type":"answer","sdp":...}         the node's answer
  in  {"type":"offer","sdp":...}          the node adds forwarded tracks
  out {"type":"answer","sdp":...}
  out {"type":"stats","frames":{stream_id: n}, "connection": state,
       "audioPayloads": [hex, ...]}     once a second; the last audio RTP payloads as received
  in  {"type":"quit"}
Network: loopback only (TESTBED.md): no STUN servers, host candidates on 127.0.0.1.
"""

import asyncio
import json
import sys
from fractions import Fraction

import collections

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from av import VideoFrame

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

# The audio payloads exactly as the node forwarded them (after SRTP, before decoding), so a
# test can see what a party without the end-to-end key gets.
AUDIO_PAYLOADS = collections.deque(maxlen=64)
_handle_rtp_packet = RTCRtpReceiver._handle_rtp_packet


async def _recording_handle_rtp_packet(self, packet, arrival_time_ms):
    if getattr(self, "_RTCRtpReceiver__kind", None) == "audio":
        AUDIO_PAYLOADS.append(bytes(packet.payload).hex())
    return await _handle_rtp_packet(self, packet, arrival_time_ms)


RTCRtpReceiver._handle_rtp_packet = _recording_handle_rtp_packet


class MovingCamera(VideoStreamTrack):
    """A 320x180 picture that changes every frame, so the encoder sends real video."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=320, height=180, format="yuv420p")
        shade = (self.n * 7) % 255
        for plane in frame.planes:
            plane.update(bytes([shade]) * plane.buffer_size)
        self.n += 1
        frame.pts = pts
        frame.time_base = time_base
        return frame


def emit(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def main():
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    frames = {}

    @pc.on("track")
    def on_track(track):
        key = f"{track.kind}:{len(frames)}"
        frames[key] = 0

        async def drain():
            # Always drain (TESTBED.md): an unread track grows memory without bound.
            while True:
                try:
                    await track.recv()
                except MediaStreamError:
                    return
                frames[key] += 1

        asyncio.ensure_future(drain())

    pc.addTrack(AudioStreamTrack())
    pc.addTrack(MovingCamera())
    pc.createDataChannel("bedside")
    await pc.setLocalDescription(await pc.createOffer())
    emit({"type": "offer", "sdp": pc.localDescription.sdp})

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def report():
        while True:
            await asyncio.sleep(1)
            emit({"type": "stats", "frames": frames, "connection": pc.connectionState,
                  "audioPayloads": list(AUDIO_PAYLOADS)})

    reporter = asyncio.ensure_future(report())
    while True:
        line = await reader.readline()
        if not line:
            break
        message = json.loads(line)
        if message["type"] == "answer":
            await pc.setRemoteDescription(RTCSessionDescription(message["sdp"], "answer"))
        elif message["type"] == "offer":
            await pc.setRemoteDescription(RTCSessionDescription(message["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            emit({"type": "answer", "sdp": pc.localDescription.sdp})
        elif message["type"] == "quit":
            break
    reporter.cancel()
    await pc.close()


if __name__ == "__main__":
    asyncio.run(main())

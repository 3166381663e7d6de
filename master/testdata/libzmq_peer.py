# A stock ZeroMQ peer (libzmq through Debian's python3-zmq) for master/libzmq_test.go.
# Usage: libzmq_peer.py REQUEST_ADDR PUBLISH_ADDR HELLO_HEX CREDENTIAL_HEX TOPIC
# As DEALER it sends the hello frame and prints the reply ("challenge HEX"); as SUB it subscribes
# with a session's credential and prints the first message on TOPIC ("pub HEX HEX"), and as a SUB
# without a credential, subscribed to everything, what it got in 2 s ("stranger none" or
# "stranger got HEX"); then a CURVE and a PLAIN client each try the request port and print how
# libzmq saw the master refuse them ("refused MECH EVENT").
import sys
import zmq
from zmq.utils.monitor import recv_monitor_message

req, pub, hello, cred, topic = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4]), sys.argv[5]
ctx = zmq.Context()
print("libzmq", zmq.zmq_version(), flush=True)

dealer = ctx.socket(zmq.DEALER)
dealer.setsockopt(zmq.LINGER, 0)
dealer.setsockopt(zmq.RCVTIMEO, 15000)
dealer.connect("tcp://" + req)
dealer.send(hello)
try:
    print("challenge", dealer.recv().hex(), flush=True)
except zmq.Again:
    print("no challenge", flush=True)
    sys.exit(2)

sub = ctx.socket(zmq.SUB)
sub.setsockopt(zmq.LINGER, 0)
sub.setsockopt(zmq.RCVTIMEO, 15000)
sub.setsockopt(zmq.SUBSCRIBE, cred)
sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
sub.connect("tcp://" + pub)
try:
    print("pub", " ".join(p.hex() for p in sub.recv_multipart()), flush=True)
except zmq.Again:
    print("no publication", flush=True)
    sys.exit(2)

stranger = ctx.socket(zmq.SUB)
stranger.setsockopt(zmq.LINGER, 0)
stranger.setsockopt(zmq.RCVTIMEO, 2000)
stranger.setsockopt(zmq.SUBSCRIBE, b"")
stranger.connect("tcp://" + pub)
try:
    print("stranger got", stranger.recv_multipart()[0].hex(), flush=True)
except zmq.Again:
    print("stranger none", flush=True)
stranger.close()

names = {v: k for k, v in vars(zmq).items() if k.startswith("EVENT_") and isinstance(v, int)}
for mech in ("CURVE", "PLAIN"):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if mech == "CURVE":
        pk, sk = zmq.curve_keypair()
        spk, _ = zmq.curve_keypair()
        s.curve_publickey, s.curve_secretkey, s.curve_serverkey = pk, sk, spk
    else:
        s.plain_username, s.plain_password = b"u", b"p"
    mon = s.get_monitor_socket()
    mon.setsockopt(zmq.RCVTIMEO, 15000)
    s.connect("tcp://" + req)
    s.send(b"x")
    seen = "none"
    try:
        while True:
            ev = recv_monitor_message(mon)["event"]
            name = names.get(ev, str(ev))
            if name.startswith("EVENT_HANDSHAKE_FAILED") or name == "EVENT_DISCONNECTED":
                seen = name
                break
            if name == "EVENT_HANDSHAKE_SUCCEEDED":
                seen = name
                break
    except zmq.Again:
        seen = "timeout"
    print("refused", mech, seen, flush=True)
    s.disable_monitor()
    mon.close()
    s.close()
dealer.close()
sub.close()
ctx.destroy(linger=0)

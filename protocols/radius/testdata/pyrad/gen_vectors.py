# Generates the pyrad vectors pasted into src/server.rs tests (PYRAD_* constants).
# Run from this folder: pip install pyrad==2.6 && python3 gen_vectors.py
from pyrad import packet, dictionary
d = dictionary.Dictionary("dictionary")
secret = b"testing123"
auth = bytes(range(0x10, 0x20))
req = packet.AuthPacket(id=42, secret=secret, authenticator=auth, dict=d)
req["User-Name"] = "001122334455"
req["User-Password"] = req.PwCrypt("001122334455")
req["Calling-Station-Id"] = "00-11-22-33-44-55"
req["NAS-IP-Address"] = "192.0.2.10"
req["NAS-Port"] = 7
req.add_message_authenticator()
raw = req.RequestPacket()
print("ACCESS_REQUEST", raw.hex())
rep = req.CreateReply()
rep.add_message_authenticator()
rep["Tunnel-Type"] = "VLAN"
rep["Tunnel-Medium-Type"] = "IEEE-802"
rep["Tunnel-Private-Group-Id"] = "20"
rraw = rep.ReplyPacket()
print("ACCESS_ACCEPT", rraw.hex())
print("verify", req.VerifyReply(packet.Packet(packet=rraw, secret=secret, dict=d), rraw))
rej = req.CreateReply(); rej.code = packet.AccessReject
rej.add_message_authenticator()
print("ACCESS_REJECT", rej.ReplyPacket().hex())

acct = packet.AcctPacket(id=7, secret=secret, dict=d)
acct["Acct-Status-Type"] = "Stop"
acct["Acct-Session-Id"] = "sess-0001"
acct["Calling-Station-Id"] = "00-11-22-33-44-55"
acct["NAS-IP-Address"] = "192.0.2.10"
acct["Acct-Input-Octets"] = 1000
acct["Acct-Input-Gigawords"] = 2
acct["Acct-Output-Octets"] = 5000
acct["Acct-Session-Time"] = 3600
acct["Acct-Terminate-Cause"] = 1
araw = acct.RequestPacket()
print("ACCOUNTING_REQUEST", araw.hex())
arep = acct.CreateReply(); arep.add_message_authenticator()
print("ma", arep.message_authenticator)
print("ACCOUNTING_RESPONSE", arep.ReplyPacket().hex())

ss = packet.AuthPacket(code=packet.StatusServer, id=9, secret=secret, authenticator=bytes(16*[0xab]), dict=d)
ss.add_message_authenticator()
print("STATUS_SERVER", ss.RequestPacket().hex())
ssr = ss.CreateReply(); ssr.code = packet.AccessAccept
ssr.add_message_authenticator()
print("STATUS_SERVER_ACCEPT", ssr.ReplyPacket().hex())

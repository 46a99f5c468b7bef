# mypy: ignore-errors
# ruff: noqa: UP012, UP031
"""
Seed 004 ("实战演练3:组播技术"), the multicast peer, in Python 3.

Changed from the tutorial, and nothing else:
  - C{listenMulitcast} is C{listenMulticast};
  - the datagram is compared with C{b"Notify"}, not C{"Notify"} (bytes
    never equal a str in Python 3);
  - print flushes.

It joins 224.0.0.1, sends the bare 6-byte C{Notify} to 224.0.0.1:8001 and
prints every datagram with its sender: the unicast C{Acknowledge} of every
responder on the group, and its own C{Notify} (multicast loops back).
Run it only where 224.0.0.1 stays on this host (a network namespace with a
multicast route on C{lo}): it sends to the group on the default route.
"""

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

multicast_ip = "224.0.0.1"  # 组播地址
port = 8001  # 端口


class Multicast(DatagramProtocol):  # DatagramProtocol子类
    def startProtocol(self):  # 连接成功后被调用
        self.transport.joinGroup(multicast_ip)  # 加入组播组
        self.transport.write(
            ("Notify").encode("utf8"), (multicast_ip, port)
        )  # 组播数据

    def datagramReceived(self, datagram, addr):  # 收到数据时被调用
        print("datagram %s received from %s" % (repr(datagram), repr(addr)), flush=True)
        if datagram == b"Notify":
            self.transport.write(("Acknowlege").encode("utf8"), addr)  # 单播回应


reactor.listenMulticast(port, Multicast(), listenMultiple=True)  # 组播监听
reactor.run()  # 挂起运行

# mypy: ignore-errors
# ruff: noqa: UP031
"""
Seed 004 ("实战演练1:普通UDP"), the plain UDP program, in Python 3.

Changed from the tutorial, and nothing else:
  - it listens on a port of the kernel's choice (the tutorial's listens on
    8007, the port it sends to: against a daemon on this host that port is
    the daemon's), and the host and port it sends to, and the sleep between
    two messages (the tutorial's 5 seconds), come from the command line;
  - the thread that sends starts once the port listens: started before,
    as in the tutorial, it races the listen and dies on C{None.write};
  - C{addr} is a tuple, printed with C{%s} as C{%s} of a one-tuple
    (C{"%s" % addr} of a pair raises C{TypeError} in Python 3 as in 2);
  - print flushes.

The tutorial's code is kept as it is, so linters' and mypy's objections
to its style are switched off for this file.
"""

import datetime
import sys
import threading
import time

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol


class Echo(DatagramProtocol):  # Protocol子类,此处进行通信逻辑开发
    def datagramReceived(self, datagram, addr):
        print("got data from %s" % (addr,), flush=True)
        print(datagram.decode("utf8"), flush=True)


protocol = Echo()
host = sys.argv[1]
port = int(sys.argv[2])
SLEEP = float(sys.argv[3])
bStop = False


def routine():  # 每隔5秒向服务器发送消息
    while not bStop:
        # 第一个参数是发送的内容,第二个参数是 发送目的地的ip和端口号
        protocol.transport.write(
            ("hello,i am %s" % (datetime.datetime.now())).encode("utf8"), (host, port)
        )
        time.sleep(SLEEP)


reactor.listenUDP(0, protocol)  # 传入端口地址和处理该端口数据的DatagramProtocol子类
threading.Thread(target=routine).start()  # 启动县城运行routine()函数
reactor.run()  # 挂起运行
bStop = True  # 通知routine线程退出

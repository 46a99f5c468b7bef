# mypy: ignore-errors
# ruff: noqa: UP031
"""
Seed 004 ("实战演练2:Connect UDP"), the connected-UDP program, in Python 3.

Changed from the tutorial, and nothing else:
  - it listens on a port of the kernel's choice (the tutorial's listens on
    8007, the port it connects to), and the host and port it connects to,
    and the sleep between two messages (the tutorial's 5 seconds), come
    from the command line;
  - the thread is given C{protocol}, not the undefined C{factory}
    (a C{NameError} as written), and starts once the port listens (started
    before, it races the listen and dies on C{None.write});
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

host = sys.argv[1]
port = int(sys.argv[2])
SLEEP = float(sys.argv[3])


class Echo(DatagramProtocol):  # DatagramProtocol子类
    def startProtocol(self):  # 连接成功后被调用
        self.transport.connect(host, port)  # 指定对方的地址和端口
        print("连接已经创建", flush=True)

    def datagramReceived(self, datagram, addr):  # 收到数据时被调用
        print(datagram.decode("utf8"), flush=True)

    def connectionRefused(self):  # 每次通信失败后调用
        print("发送失败", flush=True)

    def stopProtocol(self):
        print("连接关闭", flush=True)


protocol = Echo()
bStop = False


def routine(factory):  # 每隔5秒向服务器发送消息
    while not bStop:
        # 发送数据时只需传入数据,无需传入对方地址和端口
        protocol.transport.write(
            ("hello,i am %s" % (datetime.datetime.now())).encode("utf8")
        )
        time.sleep(SLEEP)


reactor.listenUDP(0, protocol)  # 传入端口地址和处理该端口数据的DatagramProtocol子类
threading.Thread(target=routine, args=(protocol,)).start()  # 启动县城运行routine()函数
reactor.run()  # 挂起运行
bStop = True  # 通知routine线程退出

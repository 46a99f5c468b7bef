# mypy: ignore-errors
# ruff: noqa: UP031
"""
Seed 000 ("Twisted 介绍 及TCP广播系统实例"), the broadcast client, in
Python 3.

Changed from the tutorial, and nothing else:
  - host and port come from the command line (the tutorial's are
    127.0.0.1 and 8007), and the sleep between two messages from the third
    argument (the tutorial's 5 seconds);
  - print flushes, so that the test reads each line as it is printed.

The tutorial's code is kept as it is, so linters' and mypy's objections
to its style are switched off for this file.
"""

import datetime
import sys
import threading
import time

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory, Protocol


class Echo(Protocol):  # Protocol子类,此处进行通信逻辑开发
    def __init__(self):
        self.connected = False  # 在函数routine中使用该状态决定是否向服务器发送消息

    def connectionMade(self):
        self.connected = True

    def connectionLost(self, reason):
        self.connected = False

    def dataReceived(self, data):
        print(data.decode("utf8"), flush=True)


class EchoClientFactory(ClientFactory):  # Factory子类,管理鏈接關係
    def __init__(self):
        self.protocol = None

    def startedConnecting(self, connector):
        print("開始鏈接", flush=True)

    def buildProtocol(self, addr):
        print("已連接", flush=True)
        self.protocol = Echo()
        return self.protocol

    def clientConnectionLost(self, connector, reason):
        print("鏈接丟失,原因是:", reason, flush=True)

    def clientConnectionFailed(self, connector, reason):
        print("鏈接失敗,原因是:", reason, flush=True)


bStop = False


def routine(factory):  # 每隔5秒向服務器發送消息
    while not bStop:
        if factory.protocol and factory.protocol.connected:
            factory.protocol.transport.write(
                ("hello,i am xx %s" % (datetime.datetime.now())).encode("utf8")
            )
        time.sleep(SLEEP)


host = sys.argv[1]
port = int(sys.argv[2])
SLEEP = float(sys.argv[3])
factory = EchoClientFactory()
reactor.connectTCP(host, port, factory)
threading.Thread(target=routine, args=(factory,)).start()  # 啟動線程運行routine()函數
reactor.run()  # 掛起運行
bStop = True  # 通知routine線程退出

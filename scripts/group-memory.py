#!/usr/bin/env python3
# What consumer-group pending entries cost in RSS: starts target/release/evringd (build it
# first) on a temp data directory with the RESP port on 127.0.0.1:16390, XADDs N entries,
# delivers them all to one consumer (XREADGROUP COUNT 10000), and prints the RSS growth per
# pending entry. Usage: scripts/group-memory.py [N] [consumer-name-length]
import socket, subprocess, time, os, sys
port=16390
d="/tmp/memgrp"; subprocess.run(["rm","-rf",d]); os.makedirs(d)
p=subprocess.Popen(["target/release/evringd","--data-dir",d+"/data","--listen","127.0.0.1:0","--set",'metrics_listen=""',"--set",'resp_listen="127.0.0.1:%d"'%port,"--set","pin_cpus=false","--set","shards=1","--set","snapshot_every_events=0"],stdout=open(d+"/log","w"),stderr=subprocess.STDOUT)
time.sleep(1.5)
def cmd(*a):
    s=b"*%d\r\n"%len(a)
    for x in a:
        x=x.encode() if isinstance(x,str) else x
        s+=b"$%d\r\n%s\r\n"%(len(x),x)
    return s
r=socket.create_connection(("127.0.0.1",port))
buf=b""
def read_replies(n):
    global buf
    got=0
    while got<n:
        while b"\r\n" not in buf: buf+=r.recv(1<<20)
        # crude: count only simple line replies (XADD returns bulk: $N\r\nID\r\n)
        line,rest=buf.split(b"\r\n",1)
        if line.startswith(b"$"):
            ln=int(line[1:])
            while len(rest)<ln+2: rest+=r.recv(1<<20)
            buf=rest[ln+2:]
        else:
            buf=rest
        got+=1
def rss():
    for l in open("/proc/%d/status"%p.pid):
        if l.startswith("VmRSS"): return int(l.split()[1])
N=int(sys.argv[1]) if len(sys.argv)>1 else 200000
name=b"c"*int(sys.argv[2]) if len(sys.argv)>2 else b"consumer-1"
for i in range(0,N,1000):
    r.sendall(b"".join(cmd("XADD","s","*","f","v") for _ in range(1000)))
    read_replies(1000)
time.sleep(0.5)
r0=rss()
r.sendall(cmd("XGROUP","CREATE","s","g","0")); read_replies(1)
def recv_all_reply():
    # read until idle
    data=b""
    r.settimeout(2.0)
    t=time.time()
    while True:
        try:
            chunk=r.recv(1<<22)
        except socket.timeout:
            break
        if not chunk: break
        data+=chunk
        r.settimeout(0.3)
    r.settimeout(None)
    return data
for i in range(N//10000):
    r.sendall(cmd("XREADGROUP","GROUP","g",name,"COUNT","10000","STREAMS","s",">"))
    recv_all_reply()
time.sleep(0.5)
r1=rss()
r.sendall(cmd("XPENDING","s","g")); print(recv_all_reply()[:60])
print("entries",N,"rss before KiB",r0,"after",r1,"per pending entry bytes",(r1-r0)*1024/N)
p.terminate(); p.wait()

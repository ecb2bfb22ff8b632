"""nginx from Debian as a load balancer in front of several ckptd instances.

Balancer(ports).start() runs nginx on a free 127.0.0.1 port with an upstream of
the given instances (round robin), streaming in both directions (no request or
response buffering, no body size limit), as a deployment of several instances
would. It answers like a Daemon (request, get_json, upload_ok, ...): the object
is a ckptd.Daemon whose port is nginx's and whose process is nginx. Stopped by
its pid (SIGTERM, then SIGKILL).
"""

import os
import shutil
import signal
import socket
import subprocess
import time

from . import ckptd


class Balancer(ckptd.Daemon):
    def __init__(self, ports, name="balancer"):
        super().__init__(name=name)
        self.upstreams = list(ports)
        self.dir = os.path.join(self.scratch, "nginx")
        os.makedirs(self.dir, exist_ok=True)

    def config(self):
        d = self.dir
        # as root, nginx's workers would run as nobody, who cannot enter the
        # test's private temporary directory
        user = "user root;\n" if os.geteuid() == 0 else ""
        servers = "".join("        server 127.0.0.1:%d max_fails=0;\n" % p for p in self.upstreams)
        return """%sworker_processes 1;
events { worker_connections 512; }
http {
    access_log %s/access.log;
    client_body_temp_path %s/client_body;
    proxy_temp_path %s/proxy;
    upstream ckptd {
%s        keepalive 16;
    }
    server {
        listen 127.0.0.1:%d;
        client_max_body_size 0;
        location / {
            proxy_pass http://ckptd;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }
    }
}
""" % (user, d, d, d, servers, self.port)

    def start(self, timeout=20):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(nginx, os.X_OK):
            raise ckptd.DaemonError("nginx is missing (apt-get install nginx-light)")
        self.port = ckptd.free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(self.config())
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [nginx, "-p", self.dir, "-c", conf, "-e", self.log_path,
             "-g", "daemon off; pid %s/nginx.pid;" % self.dir],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise ckptd.DaemonError("nginx exited with %d\n%s"
                                        % (self.proc.returncode, self.log_tail()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise ckptd.DaemonError("nginx did not listen within %ds" % timeout)

    def stop(self, timeout=10, sig=signal.SIGTERM):
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None
        return 0

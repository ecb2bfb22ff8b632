"""A small S3 client for the tests (standard library only): SigV4-signed
path-style requests to the endpoint run.sh started (tests/services/rgw.sh),
to look at, damage and remove what ckptd stored there.

Client.from_env() reads CKPTD_TEST_S3_ENDPOINT, CKPTD_TEST_S3_BUCKET,
CKPTD_TEST_S3_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
"""

import datetime
import hashlib
import hmac
import http.client
import os
import urllib.parse
import xml.etree.ElementTree as ET

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class Client:
    def __init__(self, endpoint, bucket, region, key, secret):
        u = urllib.parse.urlparse(endpoint)
        self.host, self.port = u.hostname, u.port or 80
        self.bucket, self.region, self.key, self.secret = bucket, region, key, secret

    @classmethod
    def from_env(cls):
        e = os.environ
        return cls(e["CKPTD_TEST_S3_ENDPOINT"], e["CKPTD_TEST_S3_BUCKET"],
                   e.get("CKPTD_TEST_S3_REGION", "us-east-1"), e["AWS_ACCESS_KEY_ID"],
                   e["AWS_SECRET_ACCESS_KEY"])

    def request(self, method, key="", query=None, body=b""):
        """-> (status, headers, body bytes)."""
        path = "/" + self.bucket + ("/" + urllib.parse.quote(key) if key else "")
        q = sorted((query or {}).items())
        qs = "&".join("%s=%s" % (urllib.parse.quote(k, safe="-_.~"),
                                 urllib.parse.quote(str(v), safe="-_.~")) for k, v in q)
        now = datetime.datetime.now(datetime.timezone.utc)
        amz = now.strftime("%Y%m%dT%H%M%SZ")
        day = now.strftime("%Y%m%d")
        payload = hashlib.sha256(body).hexdigest()
        host = "%s:%d" % (self.host, self.port)
        headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz}
        signed = ";".join(sorted(headers))
        canonical = "\n".join([method, path, qs]
                              + ["%s:%s" % (k, headers[k]) for k in sorted(headers)]
                              + ["", signed, payload])
        scope = "%s/%s/s3/aws4_request" % (day, self.region)
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        k = _sign(("AWS4" + self.secret).encode(), day)
        k = _sign(_sign(_sign(k, self.region), "s3"), "aws4_request")
        sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = ("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, "
                                    "Signature=%s" % (self.key, scope, signed, sig))
        c = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            c.request(method, path + ("?" + qs if qs else ""), body=body or None,
                      headers=headers)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def list(self, prefix):
        """Every key under prefix (all pages)."""
        keys, token = [], None
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            st, _h, body = self.request("GET", query=q)
            if st != 200:
                raise RuntimeError("S3 list %s: %d %r" % (prefix, st, body[:300]))
            root = ET.fromstring(body)
            keys += [c.find(NS + "Key").text for c in root.findall(NS + "Contents")]
            if root.findtext(NS + "IsTruncated") != "true":
                return keys
            token = root.findtext(NS + "NextContinuationToken")

    def get(self, key):
        st, _h, body = self.request("GET", key)
        if st != 200:
            raise RuntimeError("S3 GET %s: %d" % (key, st))
        return body

    def put(self, key, data):
        st, _h, body = self.request("PUT", key, body=data)
        if st != 200:
            raise RuntimeError("S3 PUT %s: %d %r" % (key, st, body[:300]))

    def delete(self, key):
        st, _h, _b = self.request("DELETE", key)
        if st not in (200, 204, 404):
            raise RuntimeError("S3 DELETE %s: %d" % (key, st))

    def delete_prefix(self, prefix):
        for k in self.list(prefix):
            self.delete(k)

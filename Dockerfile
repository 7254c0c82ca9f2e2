# ingestd in an image with nothing else in it. The binary is static (glibc crt-static), so it
# needs no libc, loader or shell. Build the binary first, then the image:
#   make dist
#   docker build -t ingestd .        (or: podman build -t ingestd .)
#   docker run -p 8000:8000 -v ingestd-data:/data ingestd
# One container per upstream API: two pace on their own and together exceed its limit.
# Real-time pacing needs CAP_SYS_NICE, which `--cap-add SYS_NICE` gives to a root process only
# (`--user 0`), and on kernels with real-time group scheduling also `--cpu-rt-runtime`.
FROM scratch

COPY target/dist/ingestd /ingestd

# The journal. Docker copies this empty, 65532-owned directory into a new named volume, so the
# non-root user below can write to it; a bind-mounted host directory must be writable by 65532.
COPY --chown=65532:65532 contrib/data/ /data/
VOLUME ["/data"]

# No /etc/passwd in the image: a numeric user, not root.
USER 65532:65532

# The image has no /tmp: the private socket between ingestd's HTTP front and its HTTP library
# goes in /data, also when flags given to `docker run` replace CMD's --data-dir.
ENV TMPDIR=/data

# With PORT set and no --addr, ingestd listens on 0.0.0.0:$PORT and `ingestd health` asks
# 127.0.0.1:$PORT, so `-e PORT=...` moves both.
ENV PORT=8000
EXPOSE 8000

ENTRYPOINT ["/ingestd"]
CMD ["--data-dir", "/data", "--log-format", "json"]

HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/ingestd", "health", "--timeout", "2s"]

# SIGTERM (docker stop): new requests get 503, the batch in flight finishes, then exit 0.
# Give it longer than --shutdown-timeout (30 s): docker stop -t 45.
STOPSIGNAL SIGTERM

# ingestd in an image with nothing else in it. The binary is static (glibc crt-static), so it
# needs no libc, loader or shell. Build the binary first, then the image:
#   make dist
#   docker build -t ingestd .        (or: podman build -t ingestd .)
#   docker run -p 8000:8000 -v ingestd-data:/data --cap-add SYS_NICE ingestd
# --cap-add SYS_NICE lets the pacer and worker threads run real-time (on time under load); it
# is optional. One container per upstream API: two pace on their own and together exceed its limit.
FROM scratch

COPY target/dist/ingestd /ingestd

# The journal. Docker copies this empty, 65532-owned directory into a new named volume, so the
# non-root user below can write to it; a bind-mounted host directory must be writable by 65532.
COPY --chown=65532:65532 contrib/data/ /data/
VOLUME ["/data"]

# No /etc/passwd in the image: a numeric user, not root.
USER 65532:65532
EXPOSE 8000

ENTRYPOINT ["/ingestd"]
CMD ["--addr", "0.0.0.0:8000", "--data-dir", "/data", "--log-format", "json"]

HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/ingestd", "health", "--addr", "127.0.0.1:8000", "--timeout", "2s"]

# SIGTERM (docker stop): new requests get 503, the batch in flight finishes, then exit 0.
# Give it longer than --shutdown-timeout (30 s): docker stop -t 45.
STOPSIGNAL SIGTERM

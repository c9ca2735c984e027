/*
 * nfsload: a small NFSv3 load generator on libnfs's asynchronous RPC API.
 *
 * The same client drives every server of the benchmark (bench/run).  It
 * mounts an export once per connection, resolves one path with libnfs's
 * synchronous calls, then keeps a fixed number of raw NFSv3 calls in flight
 * on each connection until a time, operation or byte budget is spent.
 *
 *   nfsload --url nfs://127.0.0.1/recover/images?version=3&nfsport=P&mountport=P
 *           --op read|getattr|lookup|null --path /plain/big.img
 *           [--size 1048576] [--inflight 4] [--conns 1] [--random]
 *           [--seconds S] [--ops N] [--bytes B] [--names FILE] [--checksum]
 *   nfsload --url URL --op write --path P [--size N] [--stable 0|1|2] [--seed S]
 *           [--offset O] [--bytes B] [--random] [--written FILE] ...   (as read)
 *   nfsload --size N [--offset O] [--bytes B] --op sumfile FILE
 *                               the --checksum of a local file, as read makes it
 *   nfsload --op tcpcap [--size 1048576] [--bytes B]   loopback TCP ceiling
 *   nfsload --op pin FILE...    keep FILEs in the page cache (mlock) until killed
 *
 * op       what each call is
 * -------  ---------------------------------------------------------------
 * read     READ of --size bytes at the next offset (--random: a random
 *          --size-aligned offset); a sequential read makes one pass of the
 *          file (or of its first --bytes), or passes until --seconds/--ops
 * write    WRITE of --size bytes (stable_how --stable, default 2: FILE_SYNC)
 *          at the next offset or a random --size-aligned one, as read; the
 *          bytes are the pattern below; a reply must say committed >= --stable
 * getattr  GETATTR of --path
 * lookup   LOOKUP of a random name of --names (one a line) in --path
 * null     NFS NULL
 *
 * --offset O starts a sequential read or write at O (default 0), and --bytes
 * then counts from O.  WRITE's bytes: each 4 KiB block at file position p
 * (offsets and --size are multiples of 4 KiB) is the little-endian 64-bit
 * p ^ --seed, then 4088 bytes of an LCG (x = x * 1103515245 + 12345 mod 2^32
 * from x = (seed mod 2^32) ^ 0x9E3779B9, each byte x >> 24): the same block
 * for the same place whatever the order of the replies, so the expected file
 * is known (bench/instant_bench builds it).  --written FILE: the offset of
 * every WRITE acknowledged, little-endian 64-bit, in reply order.
 *
 * Output: one JSON line on stdout: ops, bytes, seconds (wall time from the
 * first call to the last reply), client_cpu (utime + stime of this process
 * from /proc/self/stat, set-up included), and for --checksum a 64-bit sum of
 * per-reply hashes that does not depend on the order of the replies.  Any
 * failed call, NFS error or short read is an error: message on stderr, exit 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>
#include <nfsc/libnfs-raw-nfs.h>

/* libnfs 4 keeps this private; nfs_get_fh() returns a pointer to it. */
struct nfs_fh {
    int len;
    char *val;
};

enum op { OP_READ, OP_GETATTR, OP_LOOKUP, OP_NULL, OP_TCPCAP, OP_PIN, OP_WRITE, OP_SUMFILE };

#define BLOCK 4096

struct conn {
    struct nfs_context *nfs;
    struct rpc_context *rpc;
    struct nfsfh *file;
    nfs_fh3 fh;
    int inflight;
};

struct req {
    struct conn *c;
    uint64_t offset;
    uint64_t want;
    char *buf; /* WRITE's bytes, alive until the reply */
};

static enum op op = OP_READ;
static const char *url_text, *path, *names_file, *written_file;
static uint64_t size = 1048576, budget_ops, budget_bytes, start_offset, region_end, seed = 1;
static int stable = 2; /* FILE_SYNC */
static FILE *written;
static unsigned char fill[BLOCK - 8];
static double budget_seconds;
static int inflight = 4, nconns = 1, random_offsets, want_checksum;

static struct conn *conns;
static uint64_t file_size, next_offset, issued, done_ops, done_bytes, rng = 88172645463325252ULL;
static uint64_t checksum;
static char **names;
static size_t nnames;
static double t_start, t_deadline;
static int stopping, failed;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void)
{
    /* fields 14 and 15 of /proc/self/stat, after the parenthesised name */
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f || !fgets(buf, sizeof buf, f)) {
        perror("/proc/self/stat");
        exit(1);
    }
    fclose(f);
    char *p = strrchr(buf, ')');
    unsigned long utime = 0, stime = 0;
    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime);
    return (utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static uint64_t xorshift(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "nfsload: %s: %s\n", what, detail ? detail : "");
    failed = 1;
    stopping = 1;
}

/* Hash of one reply, seeded with its offset; replies are summed. */
static uint64_t hash_block(uint64_t offset, const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL ^ (offset * 0x9E3779B97F4A7C15ULL);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 1099511628211ULL;
    }
    for (; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static int budget_left(void)
{
    if (stopping)
        return 0;
    if (budget_ops && issued >= budget_ops)
        return 0;
    if (budget_seconds > 0 && now() >= t_deadline)
        return 0;
    if ((op == OP_READ || op == OP_WRITE) && !random_offsets && next_offset >= region_end) {
        if (budget_seconds <= 0 && !budget_ops)
            return 0;
        next_offset = start_offset; /* a timed sequential run starts its region again */
    }
    return 1;
}

static void issue(struct conn *c);

static void completed(struct req *r, uint64_t nbytes)
{
    struct conn *c = r->c;
    c->inflight--;
    done_ops++;
    done_bytes += nbytes;
    free(r->buf);
    free(r);
    issue(c);
}

static void read_cb(struct rpc_context *rpc, int status, void *data, void *priv)
{
    struct req *r = priv;
    READ3res *res = data;
    (void)rpc;
    if (status != RPC_STATUS_SUCCESS) {
        fail("READ", status == RPC_STATUS_ERROR ? (char *)data : "cancelled or timed out");
    } else if (res->status != NFS3_OK) {
        char msg[64];
        snprintf(msg, sizeof msg, "nfsstat3 %d at offset %" PRIu64, res->status, r->offset);
        fail("READ", msg);
    } else {
        READ3resok *ok = &res->READ3res_u.resok;
        if (ok->count != r->want || ok->data.data_len != r->want) {
            char msg[128];
            snprintf(msg, sizeof msg, "short read at %" PRIu64 ": %u of %" PRIu64 " bytes",
                     r->offset, ok->data.data_len, r->want);
            fail("READ", msg);
        } else if (want_checksum) {
            checksum += hash_block(r->offset, (unsigned char *)ok->data.data_val, ok->data.data_len);
        }
        completed(r, ok->data.data_len);
        return;
    }
    completed(r, 0);
}

static void write_cb(struct rpc_context *rpc, int status, void *data, void *priv)
{
    struct req *r = priv;
    WRITE3res *res = data;
    char msg[128];
    (void)rpc;
    if (status != RPC_STATUS_SUCCESS) {
        fail("WRITE", status == RPC_STATUS_ERROR ? (char *)data : "cancelled or timed out");
    } else if (res->status != NFS3_OK) {
        snprintf(msg, sizeof msg, "nfsstat3 %d at offset %" PRIu64, res->status, r->offset);
        fail("WRITE", msg);
    } else if (res->WRITE3res_u.resok.count != r->want) {
        snprintf(msg, sizeof msg, "short write at %" PRIu64 ": %u of %" PRIu64 " bytes", r->offset,
                 res->WRITE3res_u.resok.count, r->want);
        fail("WRITE", msg);
    } else if ((int)res->WRITE3res_u.resok.committed < stable) {
        snprintf(msg, sizeof msg, "committed %d < stable_how %d at %" PRIu64,
                 res->WRITE3res_u.resok.committed, stable, r->offset);
        fail("WRITE", msg);
    } else {
        if (written && fwrite(&r->offset, sizeof r->offset, 1, written) != 1)
            fail("--written", strerror(errno));
        completed(r, r->want);
        return;
    }
    completed(r, 0);
}

/* The pattern of the header comment, for n bytes at file position pos (4 KiB aligned). */
static void pattern(char *buf, uint64_t pos, uint64_t n)
{
    for (uint64_t i = 0; i < n; i += BLOCK) {
        uint64_t head = (pos + i) ^ seed;
        for (int b = 0; b < 8; b++)
            buf[i + b] = (char)(head >> (8 * b));
        memcpy(buf + i + 8, fill, n - i < BLOCK ? n - i - 8 : sizeof fill);
    }
}

static void make_fill(void)
{
    uint32_t x = (uint32_t)seed ^ 0x9E3779B9u;
    for (size_t i = 0; i < sizeof fill; i++) {
        x = x * 1103515245u + 12345u;
        fill[i] = x >> 24;
    }
}

static void status_cb(struct rpc_context *rpc, int status, void *data, void *priv)
{
    /* GETATTR3res and LOOKUP3res both start with nfsstat3 */
    struct req *r = priv;
    (void)rpc;
    if (status != RPC_STATUS_SUCCESS)
        fail("call", status == RPC_STATUS_ERROR ? (char *)data : "cancelled or timed out");
    else if (op != OP_NULL && *(nfsstat3 *)data != NFS3_OK) {
        char msg[32];
        snprintf(msg, sizeof msg, "nfsstat3 %d", *(nfsstat3 *)data);
        fail(op == OP_GETATTR ? "GETATTR" : "LOOKUP", msg);
    }
    completed(r, 0);
}

static void issue(struct conn *c)
{
    while (c->inflight < inflight && budget_left()) {
        struct req *r = calloc(1, sizeof *r);
        int rc = 0;
        r->c = c;
        issued++;
        if (op == OP_WRITE) {
            WRITE3args a;
            if (random_offsets) {
                uint64_t slots = file_size / size;
                r->offset = (xorshift() % (slots ? slots : 1)) * size;
                r->want = size;
            } else {
                r->offset = next_offset;
                next_offset += size;
                r->want = region_end - r->offset < size ? region_end - r->offset : size;
            }
            r->buf = malloc(r->want);
            pattern(r->buf, r->offset, r->want);
            a.file = c->fh;
            a.offset = r->offset;
            a.count = r->want;
            a.stable = stable;
            a.data.data_len = r->want;
            a.data.data_val = r->buf;
            rc = rpc_nfs3_write_async(c->rpc, write_cb, &a, r);
        } else if (op == OP_READ) {
            READ3args a;
            if (random_offsets) {
                uint64_t slots = file_size / size;
                r->offset = (xorshift() % (slots ? slots : 1)) * size;
            } else {
                r->offset = next_offset;
                next_offset += size;
            }
            r->want = file_size - r->offset < size ? file_size - r->offset : size;
            a.file = c->fh;
            a.offset = r->offset;
            a.count = size;
            rc = rpc_nfs3_read_async(c->rpc, read_cb, &a, r);
        } else if (op == OP_GETATTR) {
            GETATTR3args a = {.object = c->fh};
            rc = rpc_nfs3_getattr_async(c->rpc, status_cb, &a, r);
        } else if (op == OP_LOOKUP) {
            LOOKUP3args a;
            a.what.dir = c->fh;
            a.what.name = names[xorshift() % nnames];
            rc = rpc_nfs3_lookup_async(c->rpc, status_cb, &a, r);
        } else {
            rc = rpc_nfs3_null_async(c->rpc, status_cb, r);
        }
        if (rc) {
            free(r->buf);
            free(r);
            fail("queueing a call", rpc_get_error(c->rpc));
            return;
        }
        c->inflight++;
    }
}

static void load_names(void)
{
    FILE *f = fopen(names_file, "r");
    char line[1024];
    size_t cap = 0;
    if (!f) {
        perror(names_file);
        exit(1);
    }
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!line[0])
            continue;
        if (nnames == cap) {
            cap = cap ? cap * 2 : 1024;
            names = realloc(names, cap * sizeof *names);
        }
        names[nnames++] = strdup(line);
    }
    fclose(f);
    if (!nnames) {
        fprintf(stderr, "nfsload: %s holds no names\n", names_file);
        exit(1);
    }
}

static void connect_one(struct conn *c)
{
    struct nfs_url *u;
    struct nfs_stat_64 st;
    c->nfs = nfs_init_context();
    if (!c->nfs) {
        fprintf(stderr, "nfsload: nfs_init_context failed\n");
        exit(1);
    }
    u = nfs_parse_url_dir(c->nfs, url_text);
    if (!u) {
        fprintf(stderr, "nfsload: bad URL %s: %s\n", url_text, nfs_get_error(c->nfs));
        exit(1);
    }
    if (nfs_mount(c->nfs, u->server, u->path)) {
        fprintf(stderr, "nfsload: mount %s:%s: %s\n", u->server, u->path, nfs_get_error(c->nfs));
        exit(1);
    }
    nfs_destroy_url(u);
    c->rpc = nfs_get_rpc_context(c->nfs);
    if (op == OP_NULL)
        return;
    if (nfs_stat64(c->nfs, path, &st)) {
        fprintf(stderr, "nfsload: stat %s: %s\n", path, nfs_get_error(c->nfs));
        exit(1);
    }
    file_size = st.nfs_size;
    if (nfs_open(c->nfs, path, O_RDONLY, &c->file)) {
        fprintf(stderr, "nfsload: open %s: %s\n", path, nfs_get_error(c->nfs));
        exit(1);
    }
    struct nfs_fh *fh = nfs_get_fh(c->file);
    c->fh.data.data_len = fh->len;
    c->fh.data.data_val = fh->val;
}

static int run_nfs(void)
{
    struct pollfd *pfd = calloc(nconns, sizeof *pfd);
    double t_end;
    if (names_file)
        load_names();
    else if (op == OP_LOOKUP) {
        fprintf(stderr, "nfsload: --op lookup needs --names\n");
        return 2;
    }
    conns = calloc(nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++)
        connect_one(&conns[i]);
    if ((op == OP_READ || op == OP_WRITE) && random_offsets && file_size < size) {
        fprintf(stderr, "nfsload: %s is smaller than one request\n", path);
        return 2;
    }
    region_end = budget_bytes ? start_offset + budget_bytes : file_size;
    if (op == OP_WRITE && region_end > file_size) {
        fprintf(stderr, "nfsload: --offset + --bytes is past the end of %s\n", path);
        return 2;
    }
    next_offset = start_offset;
    if (written_file && !(written = fopen(written_file, "wb"))) {
        perror(written_file);
        return 1;
    }
    t_start = now();
    t_deadline = t_start + budget_seconds;
    for (int i = 0; i < nconns; i++)
        issue(&conns[i]);
    for (;;) {
        int busy = 0;
        for (int i = 0; i < nconns; i++) {
            pfd[i].fd = rpc_get_fd(conns[i].rpc);
            pfd[i].events = rpc_which_events(conns[i].rpc);
            pfd[i].revents = 0;
            busy += conns[i].inflight;
        }
        if (!busy)
            break;
        if (poll(pfd, nconns, 1000) < 0 && errno != EINTR) {
            perror("poll");
            return 1;
        }
        for (int i = 0; i < nconns; i++) {
            if (rpc_service(conns[i].rpc, pfd[i].revents) < 0) {
                fail("connection", rpc_get_error(conns[i].rpc));
                return 1;
            }
        }
        if (budget_seconds > 0 && now() > t_deadline + 30) {
            fail("replies", "still missing 30 s after the deadline");
            return 1;
        }
    }
    t_end = now();
    if (written && fclose(written)) {
        perror(written_file);
        return 1;
    }
    for (int i = 0; i < nconns; i++) {
        if (conns[i].file)
            nfs_close(conns[i].nfs, conns[i].file);
        nfs_destroy_context(conns[i].nfs);
    }
    if (failed)
        return 1;
    printf("{\"op\": \"%s\", \"ops\": %" PRIu64 ", \"bytes\": %" PRIu64
           ", \"seconds\": %.6f, \"client_cpu\": %.2f, \"size\": %" PRIu64
           ", \"inflight\": %d, \"conns\": %d",
           op == OP_READ ? "read" : op == OP_WRITE ? "write" : op == OP_GETATTR ? "getattr" : op == OP_LOOKUP ? "lookup" : "null",
           done_ops, done_bytes, t_end - t_start, cpu_seconds(), size, inflight, nconns);
    if (want_checksum)
        printf(", \"checksum\": \"%016" PRIx64 "\"", checksum);
    printf("}\n");
    return 0;
}

/* The --checksum a sequential read of FILE would make, from the local file. */
static int run_sumfile(const char *file)
{
    int fd = open(file, O_RDONLY);
    struct stat st;
    unsigned char *buf = malloc(size);
    if (fd < 0 || fstat(fd, &st)) {
        perror(file);
        return 1;
    }
    uint64_t end = budget_bytes ? start_offset + budget_bytes : (uint64_t)st.st_size;
    for (uint64_t off = start_offset; off < end; off += size) {
        uint64_t want = end - off < size ? end - off : size;
        ssize_t n = pread(fd, buf, want, off);
        if (n != (ssize_t)want) {
            fprintf(stderr, "nfsload: %s: short read at %" PRIu64 "\n", file, off);
            return 1;
        }
        checksum += hash_block(off, buf, want);
    }
    printf("{\"op\": \"sumfile\", \"bytes\": %" PRIu64 ", \"checksum\": \"%016" PRIx64 "\"}\n",
           end - start_offset, checksum);
    return 0;
}

/* Loopback TCP ceiling: a child writes --bytes in --size writes, the parent reads. */
static int run_tcpcap(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    uint64_t total = budget_bytes ? budget_bytes : (4ULL << 30), got = 0;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    char *buf = calloc(1, size);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1) ||
        getsockname(ls, (struct sockaddr *)&a, &alen)) {
        perror("tcpcap listen");
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&a, sizeof a)) {
            perror("tcpcap connect");
            _exit(1);
        }
        for (uint64_t sent = 0; sent < total;) {
            ssize_t n = write(s, buf, total - sent < size ? total - sent : size);
            if (n <= 0)
                _exit(1);
            sent += n;
        }
        _exit(0);
    }
    int s = accept(ls, NULL, NULL);
    double t0 = now();
    for (;;) {
        ssize_t n = read(s, buf, size);
        if (n < 0) {
            perror("tcpcap read");
            return 1;
        }
        if (n == 0)
            break;
        got += n;
    }
    double t1 = now();
    int wst;
    waitpid(pid, &wst, 0);
    if (got != total) {
        fprintf(stderr, "nfsload: tcpcap got %" PRIu64 " of %" PRIu64 " bytes\n", got, total);
        return 1;
    }
    printf("{\"op\": \"tcpcap\", \"ops\": 1, \"bytes\": %" PRIu64 ", \"seconds\": %.6f, \"client_cpu\": %.2f}\n",
           got, t1 - t0, cpu_seconds());
    return 0;
}

/* Keep files resident in the page cache: this machine evicts clean pages
 * even with free memory, which would turn a "warm cache" run into disk reads. */
static int run_pin(int n, char **files)
{
    for (int i = 0; i < n; i++) {
        int fd = open(files[i], O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st)) {
            perror(files[i]);
            return 1;
        }
        if (st.st_size == 0)
            continue;
        void *p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
        if (p == MAP_FAILED || mlock(p, st.st_size)) {
            perror(files[i]);
            return 1;
        }
        close(fd);
    }
    printf("pinned\n");
    fflush(stdout);
    for (;;)
        pause();
}

static void usage(void)
{
    fprintf(stderr, "usage: nfsload --url URL --op read|getattr|lookup|null --path PATH [--size N]\n"
                    "               [--inflight N] [--conns N] [--random] [--seconds S] [--ops N]\n"
                    "               [--bytes B] [--names FILE] [--checksum]\n"
                    "       nfsload --url URL --op write --path PATH [--stable N] [--seed S]\n"
                    "               [--offset O] [--written FILE] (and read's options)\n"
                    "       nfsload --size N [--offset O] [--bytes B] --op sumfile FILE\n"
                    "       nfsload --op tcpcap [--size N] [--bytes B]\n"
                    "       nfsload --op pin FILE...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--random")) {
            random_offsets = 1;
            continue;
        }
        if (!strcmp(a, "--checksum")) {
            want_checksum = 1;
            continue;
        }
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--url"))
            url_text = v;
        else if (!strcmp(a, "--path"))
            path = v;
        else if (!strcmp(a, "--names"))
            names_file = v;
        else if (!strcmp(a, "--written"))
            written_file = v;
        else if (!strcmp(a, "--offset"))
            start_offset = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--stable"))
            stable = atoi(v);
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--size"))
            size = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--inflight"))
            inflight = atoi(v);
        else if (!strcmp(a, "--conns"))
            nconns = atoi(v);
        else if (!strcmp(a, "--seconds"))
            budget_seconds = atof(v);
        else if (!strcmp(a, "--ops"))
            budget_ops = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--bytes"))
            budget_bytes = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--op")) {
            if (!strcmp(v, "read"))
                op = OP_READ;
            else if (!strcmp(v, "getattr"))
                op = OP_GETATTR;
            else if (!strcmp(v, "lookup"))
                op = OP_LOOKUP;
            else if (!strcmp(v, "null"))
                op = OP_NULL;
            else if (!strcmp(v, "tcpcap"))
                op = OP_TCPCAP;
            else if (!strcmp(v, "write"))
                op = OP_WRITE;
            else if (!strcmp(v, "sumfile"))
                return size && i + 2 == argc ? run_sumfile(argv[i + 1]) : (usage(), 2);
            else if (!strcmp(v, "pin"))
                return run_pin(argc - i - 1, argv + i + 1);
            else
                usage();
        } else
            usage();
    }
    if (size == 0 || inflight < 1 || nconns < 1)
        usage();
    if (op == OP_TCPCAP)
        return run_tcpcap();
    if (op == OP_WRITE && (size % BLOCK || start_offset % BLOCK || stable < 0 || stable > 2)) {
        fprintf(stderr, "nfsload: WRITE needs --size and --offset in 4 KiB multiples, --stable 0-2\n");
        return 2;
    }
    make_fill();
    if (!url_text || (op != OP_NULL && !path))
        usage();
    if (!budget_seconds && !budget_ops && ((op != OP_READ && op != OP_WRITE) || random_offsets)) {
        fprintf(stderr, "nfsload: give --seconds or --ops\n");
        return 2;
    }
    return run_nfs();
}

/* Stress through the C ABI (issue 12), the same invariants as crates/aioctx/tests/stress.rs,
   bounded by AIOCTX_STRESS_SECONDS (default 5). Over many short-lived contexts, each round
   runs at once: submitters of batches of O_DIRECT and buffered reads of a known pattern,
   O_DIRECT and buffered writes of a pattern of their own (each to a block no other write of
   the round touches), O_DIRECT reads into memory painted when destroy returns, pipe and
   socket reads, polls and fsyncs; reapers; a canceller of random accepted iocbs; a feeder of
   the pipe and the socket; and three destroyers. Checked per iocb (each is submitted once;
   its data is its identity):
   - an accepted iocb has exactly one event or was discarded by destroy, never two; a
     refused one has none; a cancel is accepted (-EINPROGRESS) at most once;
   - no get_events begun after destroy returned delivers anything, no submit after it is
     accepted, and no byte of the memory painted when destroy returned (or of any buffer,
     painted once the round is over) changes afterwards (checked rounds later);
   - every completed read holds the file's bytes, every completed write is on disk;
   - exactly one destroyer gets 0, the others -EINVAL, and once they returned the
     library holds none of the round's descriptors open (its duplicates are closed).
   On the simulator (AIOCTX_ENGINE=sim), EIO, ENOSPC (writes) and short transfers are
   injected faults (AIOCTX_SIM), counted, not violations. A round running past ROUND_LIMIT
   seconds is a hang: the program says which iocbs are still without an event and exits 3. */
#include "check.h"
#include <dirent.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#define BLOCK 4096
#define SLOTS 512
#define READ_BLOCKS 256
#define WRITE_BLOCKS SLOTS
#define SHARED_BLOCKS 16
#define SUBMITTERS 3
#define REAPERS 2
#define DESTROYERS 3
#define SETS 4 /* rounds whose memory is painted and checked later */
#define CANARY 0xc3
#define PIPE_BYTE 0xa5
#define SOCKET_BYTE 0x5c
#define ROUND_LIMIT 60

enum kind { READ_DIRECT, READ_BUFFERED, WRITE_DIRECT, WRITE_BUFFERED, SHARED_READ, PIPE_READ,
	    SOCKET_READ, POLL, FSYNC, KINDS };
static const char *kind_name[KINDS] = {"direct read", "buffered read", "direct write",
				       "buffered write", "shared read", "pipe read",
				       "socket read", "poll", "fsync"};
enum state { UNUSED, SUBMITTING, ACCEPTED, REFUSED };

struct slot {
	struct iocb iocb;
	int state, events, cancels;
	enum kind kind;
	long offset, len;
};

struct files {
	int read_direct, read_buffered, write_direct, write_buffered;
};

struct round {
	io_context_t ctx;
	const struct files *files;
	int round, pipe_r, pipe_w, sock_r, sock_w;
	struct slot slots[SLOTS];
	unsigned char *bufs;   /* SLOTS blocks, one per iocb, page aligned */
	unsigned char *shared; /* SHARED_BLOCKS blocks, painted when destroy returns */
	pthread_mutex_t lock;
	int next;
	int destroying, destroyed, destroyer_turn;
	int results[DESTROYERS];
	int violations;
	long faults, cancelled;
	pthread_barrier_t barrier;
};

static int on_sim;
static long total_contexts, total_accepted, total_refused, total_events, total_discarded,
	total_cancels, total_cancelled, total_faults, total_duplicates, total_late,
	total_held;
static struct round *current; /* for the watchdog */
static volatile int round_seq;

static void violation(struct round *r, const char *what, long a, long b)
{
	if (__atomic_add_fetch(&r->violations, 1, __ATOMIC_SEQ_CST) <= 20)
		fprintf(stderr, "stress: round %d: %s (%ld, %ld)\n", r->round, what, a, b);
}

static unsigned rnd(unsigned *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static int load(int *p)
{
	return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static unsigned char write_byte(int round, long slot, long j)
{
	return (unsigned char)((slot * 31 + round * 17 + j / 7) % 253);
}

/* Fills slot `i` with a request drawn from `seed`. */
static void prepare(struct round *r, int i, unsigned *seed)
{
	struct slot *s = &r->slots[i];
	struct iocb *cb = &s->iocb;
	unsigned char *buf = r->bufs + (long)i * BLOCK;
	unsigned c = rnd(seed) % 16;
	s->kind = c < 3 ? READ_DIRECT : c < 5 ? READ_BUFFERED : c < 7 ? WRITE_DIRECT
		: c < 8 ? WRITE_BUFFERED : c < 10 ? SHARED_READ : c < 11 ? PIPE_READ
		: c < 12 ? SOCKET_READ : c < 14 ? POLL : FSYNC;
	switch (s->kind) {
	case READ_DIRECT:
		s->offset = (long)(rnd(seed) % READ_BLOCKS) * BLOCK;
		s->len = BLOCK;
		io_prep_pread(cb, r->files->read_direct, buf, BLOCK, s->offset);
		break;
	case READ_BUFFERED:
		s->len = 1 + rnd(seed) % BLOCK;
		s->offset = rnd(seed) % ((READ_BLOCKS - 1) * BLOCK);
		io_prep_pread(cb, r->files->read_buffered, buf, s->len, s->offset);
		break;
	case WRITE_DIRECT:
	case WRITE_BUFFERED:
		/* Block i of the write file is this iocb's alone in this round. */
		s->offset = (long)i * BLOCK;
		s->len = s->kind == WRITE_DIRECT ? BLOCK : 1 + rnd(seed) % BLOCK;
		for (long j = 0; j < s->len; j++)
			buf[j] = write_byte(r->round, i, j);
		io_prep_pwrite(cb, s->kind == WRITE_DIRECT ? r->files->write_direct
							   : r->files->write_buffered,
			       buf, s->len, s->offset);
		break;
	case SHARED_READ:
		s->offset = (long)(rnd(seed) % READ_BLOCKS) * BLOCK;
		s->len = BLOCK;
		io_prep_pread(cb, r->files->read_direct,
			      r->shared + (long)(rnd(seed) % SHARED_BLOCKS) * BLOCK, BLOCK, s->offset);
		break;
	case PIPE_READ:
	case SOCKET_READ:
		s->len = 1 + rnd(seed) % 512;
		io_prep_pread(cb, s->kind == PIPE_READ ? r->pipe_r : r->sock_r, buf, s->len, 0);
		break;
	case POLL:
		io_prep_poll(cb, r->pipe_r, POLLIN);
		break;
	case FSYNC:
		io_prep_fsync(cb, r->files->write_buffered);
		break;
	default:
		break;
	}
	cb->data = (void *)(long)i;
}

static void *submitter(void *arg)
{
	struct round *r = arg;
	unsigned seed = (unsigned)(uintptr_t)pthread_self() * 2654435761u | 1;
	for (;;) {
		int dead_before = load(&r->destroyed);
		int want = 1 + rnd(&seed) % 4, first;
		pthread_mutex_lock(&r->lock);
		first = r->next;
		if (first + want > SLOTS)
			want = SLOTS - first;
		r->next += want;
		pthread_mutex_unlock(&r->lock);
		if (want <= 0)
			return NULL;
		struct iocb *list[4];
		for (int k = 0; k < want; k++) {
			prepare(r, first + k, &seed);
			__atomic_store_n(&r->slots[first + k].state, SUBMITTING, __ATOMIC_SEQ_CST);
			list[k] = &r->slots[first + k].iocb;
		}
		int ret = io_submit(r->ctx, want, list);
		for (int k = 0; k < want; k++)
			__atomic_store_n(&r->slots[first + k].state, k < ret ? ACCEPTED : REFUSED,
					 __ATOMIC_SEQ_CST);
		if (ret > 0 && dead_before)
			violation(r, "submit accepted after destroy returned", first, ret);
		if (ret == -EINVAL) {
			if (!load(&r->destroying))
				violation(r, "submit EINVAL on a live context", first, 0);
			return NULL;
		}
		if (ret == -EAGAIN)
			usleep(100);
		else if (ret < 0)
			violation(r, "submit failed", first, ret);
	}
}

/* Whether `res`, an error, is one the engine may give this iocb. */
static int allowed_error(struct round *r, const struct slot *s, long res)
{
	if (res == -ECANCELED) {
		__atomic_add_fetch(&r->cancelled, 1, __ATOMIC_SEQ_CST);
		return 1;
	}
	int write = s->kind == WRITE_DIRECT || s->kind == WRITE_BUFFERED;
	int injected = on_sim && (res == -EIO || (res == -ENOSPC && write));
	if (injected)
		__atomic_add_fetch(&r->faults, 1, __ATOMIC_SEQ_CST);
	return injected;
}

/* A transfer of `n` of `len` bytes: whole, or cut short by the simulator. */
static int allowed_count(struct round *r, long n, long len)
{
	if (n == len)
		return 1;
	int injected = on_sim && n > 0 && n < len;
	if (injected)
		__atomic_add_fetch(&r->faults, 1, __ATOMIC_SEQ_CST);
	return injected;
}

static void check_result(struct round *r, long i, const struct slot *s, long res)
{
	const unsigned char *buf = r->bufs + i * BLOCK;
	if (res < 0) {
		if (!allowed_error(r, s, res))
			violation(r, kind_name[s->kind], i, res);
		return;
	}
	switch (s->kind) {
	case READ_DIRECT:
	case READ_BUFFERED:
		if (!allowed_count(r, res, s->len))
			return violation(r, "read count", i, res);
		for (long j = 0; j < res; j++)
			if (buf[j] != file_byte(s->offset + j, 5))
				return violation(r, "read data", i, j);
		break;
	case WRITE_DIRECT:
	case WRITE_BUFFERED: {
		if (!allowed_count(r, res, s->len))
			return violation(r, "write count", i, res);
		unsigned char disk[BLOCK];
		if (pread(r->files->write_buffered, disk, res, s->offset) != res)
			return violation(r, "write read back", i, errno);
		for (long j = 0; j < res; j++)
			if (disk[j] != write_byte(r->round, i, j))
				return violation(r, "write not on disk", i, j);
		break;
	}
	case SHARED_READ:
		if (!allowed_count(r, res, s->len))
			violation(r, "shared read count", i, res);
		break;
	case PIPE_READ:
	case SOCKET_READ: {
		unsigned char want = s->kind == PIPE_READ ? PIPE_BYTE : SOCKET_BYTE;
		if (res == 0 || res > s->len)
			return violation(r, "stream read count", i, res);
		for (long j = 0; j < res; j++)
			if (buf[j] != want)
				return violation(r, "stream read data", i, j);
		break;
	}
	case POLL:
		if (!(res & POLLIN))
			violation(r, "poll mask", i, res);
		break;
	case FSYNC:
		if (res != 0)
			violation(r, "fsync", i, res);
		break;
	default:
		break;
	}
}

static void check_event(struct round *r, const struct io_event *e)
{
	long i = (long)e->data;
	if (i < 0 || i >= SLOTS || e->obj != &r->slots[i].iocb)
		return violation(r, "event for an unknown iocb", i, 0);
	struct slot *s = &r->slots[i];
	if (__atomic_add_fetch(&s->events, 1, __ATOMIC_SEQ_CST) > 1)
		return violation(r, "second event", i, 0);
	if (load(&s->state) == REFUSED)
		return violation(r, "event for a refused iocb", i, 0);
	if (e->res2 != 0)
		violation(r, "res2", i, (long)e->res2);
	check_result(r, i, s, (long)e->res);
}

static void *reaper(void *arg)
{
	struct round *r = arg;
	struct io_event events[16];
	for (;;) {
		int dead_before = load(&r->destroyed);
		struct timespec t = {0, 20 * 1000 * 1000};
		int n = io_getevents(r->ctx, 1, 16, events, &t);
		if (n == -EINVAL) {
			if (!load(&r->destroying))
				violation(r, "getevents EINVAL on a live context", 0, 0);
			return NULL;
		}
		if (n == -EINTR)
			continue;
		if (n < 0) {
			violation(r, "getevents failed", n, 0);
			return NULL;
		}
		if (n > 0 && dead_before)
			violation(r, "events from a getevents begun after destroy returned", n, 0);
		for (int k = 0; k < n; k++)
			check_event(r, &events[k]);
	}
}

static void *canceller(void *arg)
{
	struct round *r = arg;
	unsigned seed = (unsigned)r->round * 7919u | 1;
	struct io_event result;
	while (!load(&r->destroyed)) {
		usleep(20 + rnd(&seed) % 200);
		int top = load(&r->next);
		if (top == 0)
			continue;
		int i = rnd(&seed) % top;
		if (load(&r->slots[i].state) != ACCEPTED)
			continue;
		int dead_before = load(&r->destroyed);
		int ret = io_cancel(r->ctx, &r->slots[i].iocb, &result);
		if (ret == -EINPROGRESS) {
			if (dead_before)
				violation(r, "cancel accepted after destroy returned", i, 0);
			if (__atomic_add_fetch(&r->slots[i].cancels, 1, __ATOMIC_SEQ_CST) > 1)
				violation(r, "cancel accepted twice", i, 0);
		} else if (ret != -EINVAL) {
			violation(r, "cancel", i, ret);
		}
	}
	return NULL;
}

/* Writes into the pipe and the socket now and then, and all the time once destroy began,
   so the reads there become ready. */
static void *feeder(void *arg)
{
	struct round *r = arg;
	unsigned seed = (unsigned)r->round * 104729u | 1;
	unsigned char pipe_bytes[512], sock_bytes[512];
	memset(pipe_bytes, PIPE_BYTE, sizeof pipe_bytes);
	memset(sock_bytes, SOCKET_BYTE, sizeof sock_bytes);
	while (!load(&r->destroyed)) {
		if (write(r->pipe_w, pipe_bytes, sizeof pipe_bytes) < 0 && errno != EAGAIN)
			violation(r, "feed pipe", errno, 0);
		if (send(r->sock_w, sock_bytes, sizeof sock_bytes, MSG_DONTWAIT) < 0 &&
		    errno != EAGAIN)
			violation(r, "feed socket", errno, 0);
		usleep(load(&r->destroying) ? 100 : 200 + rnd(&seed) % 3000);
	}
	return NULL;
}

static void *destroyer(void *arg)
{
	struct round *r = arg;
	int me = __atomic_fetch_add(&r->destroyer_turn, 1, __ATOMIC_SEQ_CST);
	if (me == 0) {
		unsigned seed = (unsigned)r->round * 31337u | 1;
		usleep(500 + rnd(&seed) % 30000);
		__atomic_store_n(&r->destroying, 1, __ATOMIC_SEQ_CST);
	}
	pthread_barrier_wait(&r->barrier);
	int ret = io_destroy(r->ctx);
	/* Painted at once: an engine writing into it from now on leaves a mark. */
	memset(r->shared, CANARY, (size_t)SHARED_BLOCKS * BLOCK);
	__atomic_store_n(&r->destroyed, 1, __ATOMIC_SEQ_CST);
	r->results[me] = ret;
	return NULL;
}

static long changed(const unsigned char *bytes, size_t len)
{
	long n = 0;
	for (size_t i = 0; i < len; i++)
		n += bytes[i] != CANARY;
	return n;
}

static int same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* Descriptors open in this process, beyond the program's own four, on the test's files or
   on one of the `n` files in `closed` (which the program closed): the library's. Each is
   named, with what it is open on, so that a report says which. */
static int held_descriptors(int round, const struct files *files, const struct stat *closed,
			    int n)
{
	int own[4] = {files->read_direct, files->read_buffered, files->write_direct,
		      files->write_buffered};
	struct stat test_files[4];
	for (int i = 0; i < 4; i++)
		CHECK(fstat(own[i], &test_files[i]) == 0);
	DIR *dir = opendir("/proc/self/fd");
	CHECK(dir != NULL);
	int held = 0;
	struct dirent *entry;
	while ((entry = readdir(dir))) {
		int fd = atoi(entry->d_name);
		struct stat st;
		if (entry->d_name[0] == '.' || fd == dirfd(dir) || fstat(fd, &st) != 0)
			continue;
		int mine = 0, theirs = 0;
		for (int i = 0; i < 4; i++) {
			mine |= fd == own[i];
			theirs |= same_file(&st, &test_files[i]);
		}
		for (int i = 0; i < n; i++)
			theirs |= same_file(&st, &closed[i]);
		if (theirs && !mine) {
			char link[64], target[256];
			snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
			ssize_t len = readlink(link, target, sizeof target - 1);
			target[len > 0 ? len : 0] = 0;
			fprintf(stderr, "stress: round %d: descriptor %d (%s) still open after destroy\n",
				round, fd, target);
			held++;
		}
	}
	closedir(dir);
	return held;
}

/* Prints the iocbs of the running round still without an event, and ends the program. */
static void *watchdog(void *arg)
{
	(void)arg;
	int seen = -1, still = 0;
	for (;;) {
		sleep(1);
		int now = round_seq;
		if (now != seen) {
			seen = now;
			still = 0;
			continue;
		}
		if (++still < ROUND_LIMIT)
			continue;
		struct round *r = current;
		fprintf(stderr, "stress: round %d hung for %d s: destroying %d, destroyed %d\n",
			r->round, ROUND_LIMIT, load(&r->destroying), load(&r->destroyed));
		for (int i = 0; i < SLOTS; i++)
			if (load(&r->slots[i].state) == ACCEPTED && load(&r->slots[i].events) == 0)
				fprintf(stderr, "stress:   iocb %d (%s) has no event yet\n", i,
					kind_name[r->slots[i].kind]);
		_exit(3);
	}
	return NULL;
}

static int one_round(int round, const struct files *files, unsigned char *bufs,
		     unsigned char *shared)
{
	struct round *r = calloc(1, sizeof(*r));
	CHECK(r != NULL);
	int pipefd[2], sock[2];
	CHECK(pipe2(pipefd, O_NONBLOCK) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sock) == 0);
	/* The read ends block, as a program's would; only the feeder's ends do not. */
	CHECK(fcntl(pipefd[0], F_SETFL, 0) == 0);
	r->round = round;
	r->files = files;
	r->pipe_r = pipefd[0];
	r->pipe_w = pipefd[1];
	r->sock_r = sock[0];
	r->sock_w = sock[1];
	r->bufs = bufs;
	r->shared = shared;
	pthread_mutex_init(&r->lock, NULL);
	pthread_barrier_init(&r->barrier, NULL, DESTROYERS);
	CHECK_RET(io_setup(4 << (round % 7), &r->ctx), 0);
	current = r;
	__atomic_add_fetch(&round_seq, 1, __ATOMIC_SEQ_CST);
	pthread_t threads[SUBMITTERS + REAPERS + 2 + DESTROYERS];
	int t = 0;
	for (int i = 0; i < SUBMITTERS; i++)
		CHECK(pthread_create(&threads[t++], NULL, submitter, r) == 0);
	for (int i = 0; i < REAPERS; i++)
		CHECK(pthread_create(&threads[t++], NULL, reaper, r) == 0);
	CHECK(pthread_create(&threads[t++], NULL, canceller, r) == 0);
	CHECK(pthread_create(&threads[t++], NULL, feeder, r) == 0);
	for (int i = 0; i < DESTROYERS; i++)
		CHECK(pthread_create(&threads[t++], NULL, destroyer, r) == 0);
	for (int i = 0; i < t; i++)
		CHECK(pthread_join(threads[i], NULL) == 0);
	/* Painted once the reapers (which read the buffers) are gone: any change from now on
	   is a late write. */
	memset(r->bufs, CANARY, (size_t)SLOTS * BLOCK);
	int zero = 0, einval = 0;
	for (int i = 0; i < DESTROYERS; i++) {
		zero += r->results[i] == 0;
		einval += r->results[i] == -EINVAL;
	}
	if (zero != 1 || einval != DESTROYERS - 1)
		violation(r, "destroyers' results (0s, -EINVALs)", zero, einval);
	for (int i = 0; i < SLOTS; i++) {
		struct slot *s = &r->slots[i];
		if (s->state == ACCEPTED) {
			total_accepted++;
			if (s->events == 0)
				total_discarded++;
			else
				total_events++;
			if (s->events > 1)
				total_duplicates += s->events - 1;
		} else if (s->state == REFUSED) {
			total_refused++;
		}
		total_cancels += s->cancels;
	}
	total_faults += r->faults;
	total_cancelled += r->cancelled;
	total_contexts++;
	struct stat ids[4];
	int ends[4] = {pipefd[0], pipefd[1], sock[0], sock[1]};
	for (int i = 0; i < 4; i++) {
		CHECK(fstat(ends[i], &ids[i]) == 0);
		close(ends[i]);
	}
	/* The descriptors the library duplicated for the round's iocbs are all closed. */
	if (held_descriptors(round, files, ids, 4) > 0)
		total_held++;
	int violations = r->violations;
	pthread_barrier_destroy(&r->barrier);
	pthread_mutex_destroy(&r->lock);
	free(r);
	return violations;
}

static double seconds_since(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) + (now.tv_nsec - start->tv_nsec) / 1e9;
}

int main(void)
{
	report_library();
	const char *env = getenv("AIOCTX_STRESS_SECONDS");
	double seconds = env && atof(env) > 0 ? atof(env) : 5;
	const char *engine = getenv("AIOCTX_ENGINE");
	on_sim = engine && strcmp(engine, "sim") == 0;
	struct files files;
	files.read_direct = temp_file(READ_BLOCKS * BLOCK, 5, O_RDONLY | O_DIRECT);
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", files.read_direct);
	files.read_buffered = open(path, O_RDONLY);
	CHECK(files.read_buffered >= 0);
	files.write_direct = temp_file(WRITE_BLOCKS * BLOCK, 9, O_RDWR | O_DIRECT);
	snprintf(path, sizeof path, "/proc/self/fd/%d", files.write_direct);
	files.write_buffered = open(path, O_RDWR);
	CHECK(files.write_buffered >= 0);
	unsigned char *bufs[SETS], *shared[SETS];
	for (int i = 0; i < SETS; i++) {
		bufs[i] = aligned((size_t)SLOTS * BLOCK);
		shared[i] = aligned((size_t)SHARED_BLOCKS * BLOCK);
	}
	pthread_t dog;
	CHECK(pthread_create(&dog, NULL, watchdog, NULL) == 0);
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	int violations = 0;
	for (int round = 0;; round++) {
		int set = round % SETS;
		/* Painted SETS rounds ago (buffers after the round, shared memory when destroy
		   returned): late writes land here. */
		if (round >= SETS) {
			total_late += changed(bufs[set], (size_t)SLOTS * BLOCK);
			total_late += changed(shared[set], (size_t)SHARED_BLOCKS * BLOCK);
		}
		violations += one_round(round, &files, bufs[set], shared[set]);
		if (seconds_since(&start) > seconds && round >= 8)
			break;
	}
	usleep(100 * 1000);
	for (int i = 0; i < SETS; i++) {
		total_late += changed(bufs[i], (size_t)SLOTS * BLOCK);
		total_late += changed(shared[i], (size_t)SHARED_BLOCKS * BLOCK);
	}
	printf("stress %s: %ld contexts, %ld requests accepted, %ld refused, %ld events, "
	       "%ld discarded by destroy, %ld cancels accepted, %ld cancelled events, "
	       "%ld faults injected, %ld duplicates, %ld late writes, %ld contexts holding a "
	       "descriptor after destroy, %d violations, %.1f s\n",
	       engine ? engine : "auto", total_contexts, total_accepted, total_refused,
	       total_events, total_discarded, total_cancels, total_cancelled, total_faults,
	       total_duplicates, total_late, total_held, violations, seconds_since(&start));
	CHECK(violations == 0);
	CHECK(total_duplicates == 0);
	CHECK(total_late == 0);
	CHECK(total_held == 0);
	CHECK(total_events > 0);
	CHECK(total_events + total_discarded == total_accepted);
	if (on_sim && getenv("AIOCTX_SIM"))
		CHECK(total_faults > 0);
	puts("ok");
	return 0;
}

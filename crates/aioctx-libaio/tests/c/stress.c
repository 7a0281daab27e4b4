/* Stress through the C ABI (issue 12), bounded by AIOCTX_STRESS_SECONDS (default 5): over
   many short-lived contexts, submitters of O_DIRECT and buffered reads of a known pattern
   and polls, reapers, a canceller and several destroyers run at once. Checked per iocb
   (each is submitted once, its data is its identity): at most one event, none for a
   refused iocb; every completed read holds the pattern; exactly one destroyer gets 0, the
   others -EINVAL, and after the destroys returned no get_events delivers anything and no
   buffer changes again (painted once the round's threads are joined, checked rounds later). */
#include "check.h"
#include <poll.h>
#include <time.h>

#define BLOCK 4096
#define SLOTS 512
#define SUBMITTERS 3
#define REAPERS 2
#define DESTROYERS 3
#define FILE_BLOCKS 256
#define CANARY 0xc3

struct slot {
	struct iocb iocb;
	int state; /* 0 unused, 1 submitting, 2 accepted, 3 refused */
	int events;
	long offset;
	int poll;
};

struct round {
	io_context_t ctx;
	int direct, buffered, pipe_r;
	struct slot slots[SLOTS];
	unsigned char *bufs; /* SLOTS blocks, page aligned */
	pthread_mutex_t lock;
	int next;
	volatile int destroying, destroyed;
	int results[DESTROYERS];
	int violations;
	pthread_barrier_t barrier;
};

static long total_accepted, total_events, total_contexts, total_late;

static void violation(struct round *r, const char *what, long a)
{
	fprintf(stderr, "stress: %s (%ld)\n", what, a);
	__atomic_add_fetch(&r->violations, 1, __ATOMIC_SEQ_CST);
}

static unsigned rnd(unsigned *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void *submitter(void *arg)
{
	struct round *r = arg;
	unsigned seed = (unsigned)(uintptr_t)pthread_self() | 1;
	for (;;) {
		int dead_before = __atomic_load_n(&r->destroyed, __ATOMIC_SEQ_CST);
		pthread_mutex_lock(&r->lock);
		int i = r->next < SLOTS ? r->next++ : -1;
		pthread_mutex_unlock(&r->lock);
		if (i < 0)
			return NULL;
		struct slot *s = &r->slots[i];
		unsigned c = rnd(&seed) % 8;
		s->offset = (long)(rnd(&seed) % FILE_BLOCKS) * BLOCK;
		if (c == 0) {
			s->poll = 1;
			io_prep_poll(&s->iocb, r->pipe_r, POLLIN);
		} else {
			int fd = c < 4 ? r->direct : r->buffered;
			io_prep_pread(&s->iocb, fd, r->bufs + (long)i * BLOCK, BLOCK, s->offset);
		}
		s->iocb.data = (void *)(long)i;
		__atomic_store_n(&s->state, 1, __ATOMIC_SEQ_CST);
		struct iocb *list[1] = {&s->iocb};
		int ret = io_submit(r->ctx, 1, list);
		__atomic_store_n(&s->state, ret == 1 ? 2 : 3, __ATOMIC_SEQ_CST);
		if (ret == 1 && dead_before)
			violation(r, "submit accepted after destroy returned", i);
		if (ret == -EINVAL) {
			if (!r->destroying)
				violation(r, "submit EINVAL on a live context", i);
			return NULL;
		}
		if (ret != 1 && ret != -EAGAIN)
			violation(r, "submit failed", ret);
		if (ret == -EAGAIN)
			usleep(100);
	}
}

static void check_event(struct round *r, struct io_event *e)
{
	long i = (long)e->data;
	if (i < 0 || i >= SLOTS || e->obj != &r->slots[i].iocb)
		return violation(r, "event for an unknown iocb", i);
	struct slot *s = &r->slots[i];
	if (__atomic_add_fetch(&s->events, 1, __ATOMIC_SEQ_CST) > 1)
		return violation(r, "second event", i);
	if (__atomic_load_n(&s->state, __ATOMIC_SEQ_CST) == 3)
		return violation(r, "event for a refused iocb", i);
	__atomic_add_fetch(&total_events, 1, __ATOMIC_SEQ_CST);
	if (e->res == -ECANCELED)
		return;
	if (s->poll) {
		if (!(e->res & POLLIN))
			violation(r, "poll result", e->res);
		return;
	}
	if (e->res != BLOCK)
		return violation(r, "read result", e->res);
	const unsigned char *b = r->bufs + i * BLOCK;
	for (int j = 0; j < BLOCK; j++)
		if (b[j] != file_byte(s->offset + j, 5))
			return violation(r, "read data", i);
}

static void *reaper(void *arg)
{
	struct round *r = arg;
	struct io_event events[16];
	for (;;) {
		int dead_before = __atomic_load_n(&r->destroyed, __ATOMIC_SEQ_CST);
		struct timespec t = {0, 10 * 1000 * 1000};
		int n = io_getevents(r->ctx, 1, 16, events, &t);
		if (n == -EINVAL) {
			if (!r->destroying)
				violation(r, "getevents EINVAL on a live context", 0);
			return NULL;
		}
		if (n < 0 && n != -EINTR) {
			violation(r, "getevents failed", n);
			return NULL;
		}
		if (n > 0 && dead_before)
			violation(r, "events after destroy returned", n);
		for (int k = 0; k < n; k++)
			check_event(r, &events[k]);
	}
}

static void *canceller(void *arg)
{
	struct round *r = arg;
	unsigned seed = 12345;
	struct io_event result;
	while (!__atomic_load_n(&r->destroyed, __ATOMIC_SEQ_CST)) {
		int i = rnd(&seed) % SLOTS;
		if (__atomic_load_n(&r->slots[i].state, __ATOMIC_SEQ_CST) != 2)
			continue;
		int ret = io_cancel(r->ctx, &r->slots[i].iocb, &result);
		if (ret != -EINPROGRESS && ret != -EINVAL)
			violation(r, "cancel", ret);
		usleep(50);
	}
	return NULL;
}

static void *destroyer(void *arg)
{
	struct round *r = arg;
	pthread_mutex_lock(&r->lock);
	static int turn;
	int me = turn++ % DESTROYERS;
	pthread_mutex_unlock(&r->lock);
	if (me == 0) {
		usleep(500 + rand() % 20000);
		r->destroying = 1;
	}
	pthread_barrier_wait(&r->barrier);
	int ret = io_destroy(r->ctx);
	__atomic_store_n(&r->destroyed, 1, __ATOMIC_SEQ_CST);
	r->results[me] = ret;
	return NULL;
}

static long changed(const unsigned char *bufs)
{
	long n = 0;
	for (long i = 0; i < (long)SLOTS * BLOCK; i++)
		n += bufs[i] != CANARY;
	return n;
}

static int one_round(int direct, int buffered, unsigned char *bufs)
{
	struct round *r = calloc(1, sizeof(*r));
	CHECK(r != NULL);
	int pipefd[2];
	CHECK(pipe(pipefd) == 0);
	r->direct = direct;
	r->buffered = buffered;
	r->pipe_r = pipefd[0];
	r->bufs = bufs;
	pthread_mutex_init(&r->lock, NULL);
	pthread_barrier_init(&r->barrier, NULL, DESTROYERS);
	CHECK_RET(io_setup(4 << (rand() % 6), &r->ctx), 0);
	pthread_t threads[SUBMITTERS + REAPERS + 1 + DESTROYERS];
	int t = 0;
	for (int i = 0; i < SUBMITTERS; i++)
		CHECK(pthread_create(&threads[t++], NULL, submitter, r) == 0);
	for (int i = 0; i < REAPERS; i++)
		CHECK(pthread_create(&threads[t++], NULL, reaper, r) == 0);
	CHECK(pthread_create(&threads[t++], NULL, canceller, r) == 0);
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
		violation(r, "destroyers' results", zero);
	for (int i = 0; i < SLOTS; i++)
		total_accepted += r->slots[i].state == 2;
	total_contexts++;
	int violations = r->violations;
	close(pipefd[0]);
	close(pipefd[1]);
	pthread_barrier_destroy(&r->barrier);
	free(r);
	return violations;
}

int main(void)
{
	report_library();
	const char *env = getenv("AIOCTX_STRESS_SECONDS");
	double seconds = env ? atof(env) : 5;
	int direct = temp_file(FILE_BLOCKS * BLOCK, 5, O_RDONLY | O_DIRECT);
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", direct);
	int buffered = open(path, O_RDONLY);
	CHECK(buffered >= 0);
	/* Buffers of the last rounds, painted after their destroy, checked a round later. */
	unsigned char *bufs[4];
	for (int i = 0; i < 4; i++)
		bufs[i] = aligned((size_t)SLOTS * BLOCK);
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	int violations = 0;
	for (int round = 0;; round++) {
		unsigned char *mine = bufs[round % 4];
		if (round >= 4)
			total_late += changed(mine);
		violations += one_round(direct, buffered, mine);
		clock_gettime(CLOCK_MONOTONIC, &now);
		double elapsed = (now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
		if (elapsed > seconds && round >= 8)
			break;
	}
	usleep(100 * 1000);
	for (int i = 0; i < 4; i++)
		total_late += changed(bufs[i]);
	printf("stress: %ld contexts, %ld requests accepted, %ld events, %ld late writes, "
	       "%d violations\n",
	       total_contexts, total_accepted, total_events, total_late, violations);
	CHECK(violations == 0);
	CHECK(total_late == 0);
	CHECK(total_events > 0);
	puts("ok");
	return 0;
}

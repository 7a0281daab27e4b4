/* pthread_cancel, deferred, of a thread inside the library: as on the kernel's libaio,
   whose calls are no cancellation points, the call returns what it would have and the
   thread is cancelled at its own next cancellation point. (The library's calls to glibc
   wrappers inside, an eventfd read, a close of a copy, once aborted the process there.)
   1. A thread waiting in io_getevents with nothing in flight is cancelled; a read then
      submitted wakes it with its event.
   2. A thread with a cancel pending (it spins on a flag, calling no cancellation point)
      sets up a context, submits buffered, O_DIRECT and eventfd-signalling reads of a
      file whose pages were dropped, reaps them whole and destroys the context. */
#include "check.h"
#include <sys/eventfd.h>

static io_context_t shared;
static volatile int returned = -999;

static void *waiter(void *arg)
{
	(void)arg;
	struct io_event event;
	returned = io_getevents(shared, 1, 1, &event, NULL);
	pthread_testcancel();
	return NULL;
}

static volatile int go;
static volatile int stage;
enum { N = 24 };
static struct iocb iocbs[N];

/* Calls nothing but the library before its pthread_testcancel: the files, eventfd and
   buffers of its iocbs are made by main (opening and writing them are cancellation
   points). */
static void *busy(void *arg)
{
	(void)arg;
	while (!go)
		; /* no cancellation point: the cancel stays pending */
	io_context_t ctx = 0;
	CHECK_RET(io_setup(64, &ctx), 0);
	struct iocb *list[N];
	for (int i = 0; i < N; i++)
		list[i] = &iocbs[i];
	stage = 1;
	CHECK_RET(io_submit(ctx, N, list), N);
	struct io_event events[N];
	reap(ctx, N, events);
	check_whole_reads(events, N, 4096, 9);
	CHECK_RET(io_destroy(ctx), 0);
	stage = 2;
	pthread_testcancel();
	stage = 3; /* never: the pending cancel acts above */
	return NULL;
}

int main(void)
{
	report_library();
	CHECK_RET(io_setup(8, &shared), 0);
	pthread_t thread;
	CHECK(pthread_create(&thread, NULL, waiter, NULL) == 0);
	usleep(100 * 1000);
	CHECK(pthread_cancel(thread) == 0);
	usleep(100 * 1000);
	int file = temp_file(4096, 3, O_RDONLY);
	static char buf[64];
	struct iocb iocb;
	struct iocb *list[1] = {&iocb};
	io_prep_pread(&iocb, file, buf, sizeof(buf), 0);
	CHECK_RET(io_submit(shared, 1, list), 1);
	void *result;
	CHECK(pthread_join(thread, &result) == 0);
	CHECK(result == PTHREAD_CANCELED && returned == 1);
	CHECK((unsigned char)buf[1] == file_byte(1, 3));
	CHECK_RET(io_destroy(shared), 0);

	int buffered = temp_file(2 << 20, 9, O_RDONLY);
	int direct = temp_file(2 << 20, 9, O_RDONLY | O_DIRECT);
	CHECK(posix_fadvise(buffered, 0, 0, POSIX_FADV_DONTNEED) == 0);
	int efd = eventfd(0, EFD_CLOEXEC);
	CHECK(efd >= 0);
	unsigned char *bufs = aligned(N * 4096);
	for (int i = 0; i < N; i++) {
		io_prep_pread(&iocbs[i], i % 2 ? direct : buffered, bufs + i * 4096, 4096,
			      (off_t)i * 65536);
		if (i % 3 == 0)
			io_set_eventfd(&iocbs[i], efd);
	}
	CHECK(pthread_create(&thread, NULL, busy, NULL) == 0);
	CHECK(pthread_cancel(thread) == 0);
	go = 1;
	CHECK(pthread_join(thread, &result) == 0);
	CHECK(result == PTHREAD_CANCELED && stage == 2);
	printf("ok\n");
	return 0;
}

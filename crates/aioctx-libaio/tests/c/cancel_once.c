/* SPEC §2 io_cancel: a request answers -EINPROGRESS at most once; every later cancel of it
   is -EINVAL (as the kernel does), so programs that count cancels count right. */
#include "check.h"
#include <poll.h>

/* Cancels `iocb` `times` times; how many answered -EINPROGRESS (the rest must be -EINVAL). */
static int cancel_repeatedly(io_context_t ctx, struct iocb *iocb, int times)
{
	struct io_event result;
	int in_progress = 0;
	for (int i = 0; i < times; i++) {
		int ret = io_cancel(ctx, iocb, &result);
		if (ret == -EINPROGRESS) {
			in_progress++;
		} else if (ret != -EINVAL) {
			fprintf(stderr, "io_cancel returned %d\n", ret);
			exit(1);
		}
	}
	return in_progress;
}

int main(void)
{
	report_library();
	io_context_t ctx = 0;
	CHECK_RET(io_setup(64, &ctx), 0);
	struct io_event events[4];
	struct timespec brief = {0, 50 * 1000 * 1000};

	/* A poll that never fires: one -EINPROGRESS, then -EINVAL; one -ECANCELED event. */
	int pipefd[2];
	CHECK(pipe(pipefd) == 0);
	struct iocb poll_iocb;
	struct iocb *list[1] = {&poll_iocb};
	io_prep_poll(&poll_iocb, pipefd[0], POLLIN);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	CHECK(cancel_repeatedly(ctx, &poll_iocb, 1000) == 1);
	reap(ctx, 1, events);
	CHECK(events[0].obj == &poll_iocb && events[0].res == -ECANCELED);
	CHECK_RET(io_getevents(ctx, 0, 4, events, &brief), 0);

	/* O_DIRECT reads: at most one -EINPROGRESS each, and exactly one event, cancelled only
	   if a cancel was in progress. */
	int fd = temp_file(1 << 20, 3, O_RDONLY | O_DIRECT);
	void *buf = aligned(64 * 1024);
	for (int round = 0; round < 32; round++) {
		struct iocb read_iocb;
		list[0] = &read_iocb;
		io_prep_pread(&read_iocb, fd, buf, 64 * 1024, (round % 16) * 64 * 1024);
		CHECK_RET(io_submit(ctx, 1, list), 1);
		int in_progress = cancel_repeatedly(ctx, &read_iocb, 1000);
		CHECK(in_progress <= 1);
		reap(ctx, 1, events);
		CHECK(events[0].obj == &read_iocb);
		CHECK(events[0].res == 64 * 1024 || (in_progress == 1 && events[0].res == -ECANCELED));
		CHECK_RET(io_getevents(ctx, 0, 4, events, &brief), 0);
	}

	CHECK_RET(io_destroy(ctx), 0);
	puts("ok");
	return 0;
}

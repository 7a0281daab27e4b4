/* SPEC §2 io_queue_init / release / run / wait, as libaio defines them. */
#include "check.h"

/* libaio exports it, but its header leaves it out. */
extern int io_queue_wait(io_context_t ctx, struct timespec *timeout);

static int calls;
static io_context_t seen_ctx;

static void callback(io_context_t ctx, struct iocb *iocb, long res, long res2)
{
	CHECK(ctx == seen_ctx);
	CHECK(iocb->aio_lio_opcode == IO_CMD_PREAD);
	CHECK(res == 512 && res2 == 0);
	calls++;
}

int main(void)
{
	report_library();
	io_context_t ctx = 0;
	CHECK_RET(io_queue_init(16, &ctx), 0);
	seen_ctx = ctx;
	int file = temp_file(8192, 5, O_RDONLY);
	char bufs[4][512];
	struct iocb iocbs[4], *list[4];
	for (int i = 0; i < 4; i++) {
		io_prep_pread(&iocbs[i], file, bufs[i], 512, i * 512);
		io_set_callback(&iocbs[i], callback);
		list[i] = &iocbs[i];
	}
	CHECK_RET(io_submit(ctx, 4, list), 4);
	/* io_queue_wait is io_getevents(ctx, 0, 0, NULL, timeout): 0 at once. */
	struct timespec wait = {1, 0};
	CHECK_RET(io_queue_wait(ctx, &wait), 0);
	CHECK_RET(io_queue_wait(ctx, NULL), 0);
	/* io_queue_run reaps what is there and calls each callback; the last result is 0. */
	struct aio_ring_words {
		unsigned id, nr, head, tail;
	} *ring = (void *)ctx;
	for (int spins = 0; ((ring->tail + ring->nr - ring->head) % ring->nr) < 4; spins++) {
		CHECK(spins < 5000);
		usleep(1000);
	}
	CHECK_RET(io_queue_run(ctx), 0);
	CHECK(calls == 4);
	CHECK_RET(io_queue_run(ctx), 0);
	CHECK_RET(io_queue_run((io_context_t)0x1000), -EINVAL);
	CHECK_RET(io_queue_release(ctx), 0);
	CHECK_RET(io_queue_release(ctx), -EINVAL);
	close(file);
	puts("ok");
	return 0;
}

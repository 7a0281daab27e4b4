/* SPEC §2 io_cancel: order of checks, -EINPROGRESS, and -ECANCELED through the ring. */
#include "check.h"
#include <poll.h>

int main(void)
{
	report_library();
	io_context_t ctx = 0;
	CHECK_RET(io_setup(8, &ctx), 0);
	int pipefd[2];
	CHECK(pipe(pipefd) == 0);
	struct io_event result, events[2];
	memset(&result, 0xab, sizeof(result));

	/* An unreadable iocb is EFAULT before the context is looked up. */
	CHECK_RET(io_cancel((io_context_t)0x1000, NULL, &result), -EFAULT);
	CHECK_RET(io_cancel((io_context_t)0x1000, MINUS_ONE, &result), -EFAULT);
	CHECK_RET(io_cancel((io_context_t)0x1000, KERNEL_ADDR, &result), -EFAULT);

	/* Then a key that is not 0, then the context, then the request. */
	struct iocb poll_iocb, other;
	struct iocb *list[1] = {&poll_iocb};
	io_prep_poll(&poll_iocb, pipefd[0], POLLIN);
	poll_iocb.data = (void *)7;
	poll_iocb.key = 5;
	CHECK_RET(io_cancel((io_context_t)0x1000, &poll_iocb, &result), -EINVAL);
	poll_iocb.key = 0;
	CHECK_RET(io_cancel((io_context_t)0x1000, &poll_iocb, &result), -EINVAL);
	io_prep_poll(&other, pipefd[0], POLLIN);
	CHECK_RET(io_cancel(ctx, &other, &result), -EINVAL);

	/* A poll that never fires is cancellable: EINPROGRESS, then -ECANCELED in the ring;
	   `result` is not written. */
	CHECK_RET(io_submit(ctx, 1, list), 1);
	CHECK_RET(io_cancel(ctx, &poll_iocb, &result), -EINPROGRESS);
	reap(ctx, 1, events);
	CHECK(events[0].obj == &poll_iocb && events[0].data == (void *)7);
	CHECK(events[0].res == -ECANCELED && events[0].res2 == 0);
	unsigned char *bytes = (unsigned char *)&result;
	for (size_t i = 0; i < sizeof(result); i++)
		CHECK(bytes[i] == 0xab);
	/* Once done it is no longer in flight. */
	CHECK_RET(io_cancel(ctx, &poll_iocb, &result), -EINVAL);

	/* A finished request cannot be cancelled; its event stands. */
	struct iocb noop;
	memset(&noop, 0, sizeof(noop));
	noop.aio_fildes = pipefd[0];
	noop.aio_lio_opcode = 6;
	list[0] = &noop;
	CHECK_RET(io_submit(ctx, 1, list), 1);
	reap(ctx, 1, events);
	CHECK_RET(io_cancel(ctx, &noop, &result), -EINVAL);

	CHECK_RET(io_destroy(ctx), 0);
	CHECK_RET(io_cancel(ctx, &poll_iocb, &result), -EINVAL);
	puts("ok");
	return 0;
}

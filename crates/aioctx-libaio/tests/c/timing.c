/* SPEC §2, the kernel's timing: buffered writes (and reads) of regular files that the page
   cache serves complete inside io_submit, so io_getevents with min_nr 0 right after it
   returns their events. Programs and test suites submit one request and reap it that way. */
#include "check.h"
#include <sys/uio.h>

static struct timespec zero = {0, 0};

/* Takes `n` events without waiting: all must be there, each with `res`. */
static void reap_at_once(io_context_t ctx, int n, long res)
{
	struct io_event events[8];
	CHECK_RET(io_getevents(ctx, 0, n, events, &zero), n);
	for (int i = 0; i < n; i++)
		CHECK(events[i].res == res && events[i].res2 == 0);
}

int main(void)
{
	report_library();
	io_context_t ctx = 0;
	CHECK_RET(io_setup(16, &ctx), 0);
	char data[256];
	memset(data, 'w', sizeof(data));

	/* One buffered write. */
	int file = temp_file(8192, 1, O_RDWR);
	struct iocb iocb;
	struct iocb *list[8] = {&iocb};
	io_prep_pwrite(&iocb, file, data, sizeof(data), 100);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	reap_at_once(ctx, 1, sizeof(data));
	char back[256];
	CHECK(pread(file, back, sizeof(back), 100) == sizeof(back));
	CHECK(memcmp(back, data, sizeof(data)) == 0);

	/* An O_APPEND write lands at the end, whatever its offset. */
	int appending = temp_file(1000, 2, O_WRONLY | O_APPEND);
	io_prep_pwrite(&iocb, appending, "tail", 4, 0);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	reap_at_once(ctx, 1, 4);
	struct stat st;
	CHECK(fstat(appending, &st) == 0 && st.st_size == 1004);

	/* A pwritev. */
	struct iovec iov[2] = {{data, 100}, {data, 50}};
	io_prep_pwritev(&iocb, file, iov, 2, 0);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	reap_at_once(ctx, 1, 150);

	/* A batch of 8 writes, then reaped one at a time without waiting. */
	struct iocb batch[8];
	for (int i = 0; i < 8; i++) {
		io_prep_pwrite(&batch[i], file, data, 64, i * 64);
		list[i] = &batch[i];
	}
	CHECK_RET(io_submit(ctx, 8, list), 8);
	for (int i = 0; i < 8; i++)
		reap_at_once(ctx, 1, 64);

	/* A cached read, the same way. */
	io_prep_pread(&iocb, file, back, sizeof(back), 100);
	list[0] = &iocb;
	CHECK_RET(io_submit(ctx, 1, list), 1);
	reap_at_once(ctx, 1, sizeof(back));

	/* Nothing is left behind to arrive one call late. */
	struct io_event extra;
	CHECK_RET(io_getevents(ctx, 0, 1, &extra, &zero), 0);
	CHECK_RET(io_destroy(ctx), 0);
	return 0;
}

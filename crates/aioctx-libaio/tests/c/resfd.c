/* SPEC §2 IOCB_FLAG_RESFD: the event is in the ring before the eventfd moves, so a reader
   that reads N from the eventfd reaps exactly N events without waiting. */
#include "check.h"
#include <sys/eventfd.h>

#define TOTAL 400
#define BATCH 20

int main(void)
{
	report_library();
	io_context_t ctx = 0;
	CHECK_RET(io_setup(TOTAL, &ctx), 0);
	int efd = eventfd(0, EFD_CLOEXEC);
	int file = temp_file(64 * 1024, 2, O_RDONLY);
	static char bufs[TOTAL][128];
	static struct iocb iocbs[TOTAL];
	struct iocb *list[BATCH];
	struct io_event events[TOTAL];
	struct timespec zero = {0, 0};
	int submitted = 0, reaped = 0;
	while (reaped < TOTAL) {
		if (submitted < TOTAL) {
			for (int i = 0; i < BATCH; i++) {
				struct iocb *iocb = &iocbs[submitted + i];
				io_prep_pread(iocb, file, bufs[submitted + i], 128, (submitted + i) * 128);
				io_set_eventfd(iocb, efd);
				list[i] = iocb;
			}
			CHECK_RET(io_submit(ctx, BATCH, list), BATCH);
			submitted += BATCH;
		}
		uint64_t ready;
		CHECK(read(efd, &ready, sizeof(ready)) == sizeof(ready));
		CHECK(ready >= 1 && ready <= (uint64_t)(submitted - reaped));
		CHECK_RET(io_getevents(ctx, ready, ready, events, &zero), (long)ready);
		for (uint64_t i = 0; i < ready; i++) {
			size_t index = (struct iocb *)events[i].obj - iocbs;
			CHECK(index < TOTAL && events[i].res == 128);
			CHECK((unsigned char)bufs[index][5] == file_byte(index * 128 + 5, 2));
		}
		reaped += ready;
	}
	CHECK_RET(io_destroy(ctx), 0);
	puts("ok");
	return 0;
}

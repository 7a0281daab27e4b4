/* SPEC §3: a process that exits with requests in flight (a read of a pipe nobody writes,
   a poll that never fires, direct reads) exits promptly. The harness times it. */
#include "check.h"
#include <poll.h>

int main(void)
{
	report_library();
	io_context_t ctx = 0;
	CHECK_RET(io_setup(64, &ctx), 0);
	int pipefd[2];
	CHECK(pipe(pipefd) == 0);
	int file = temp_file(1 << 20, 6, O_RDONLY | O_DIRECT);
	static char rdbuf[16][8];
	struct iocb iocbs[48], *list[48];
	for (int i = 0; i < 16; i++)
		io_prep_pread(&iocbs[i], pipefd[0], rdbuf[i], 8, 0);
	for (int i = 16; i < 32; i++)
		io_prep_poll(&iocbs[i], pipefd[0], POLLIN);
	for (int i = 32; i < 48; i++)
		io_prep_pread(&iocbs[i], file, aligned(65536), 65536, (i - 32) * 65536);
	for (int i = 0; i < 48; i++)
		list[i] = &iocbs[i];
	CHECK_RET(io_submit(ctx, 48, list), 48);
	usleep(50 * 1000);
	puts("ok");
	return 0;
}

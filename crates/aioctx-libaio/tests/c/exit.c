/* SPEC §3: a process that exits with requests in flight (a read of a pipe nobody writes,
   a write of more than a pipe holds, a socket read nobody answers, a poll that never
   fires, direct reads) exits promptly, returning from main. The harness times it. */
#include "check.h"
#include <poll.h>
#include <sys/socket.h>

int main(void)
{
	report_library();
	io_context_t ctx = 0;
	CHECK_RET(io_setup(64, &ctx), 0);
	int pipefd[2];
	CHECK(pipe(pipefd) == 0);
	int file = temp_file(1 << 20, 6, O_RDONLY | O_DIRECT);
	static char rdbuf[16][8];
	int sock[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sock) == 0);
	int full[2];
	CHECK(pipe(full) == 0);
	static char big[16 << 20];
	struct iocb iocbs[50], *list[50];
	for (int i = 0; i < 16; i++)
		io_prep_pread(&iocbs[i], pipefd[0], rdbuf[i], 8, 0);
	for (int i = 16; i < 32; i++)
		io_prep_poll(&iocbs[i], pipefd[0], POLLIN);
	for (int i = 32; i < 48; i++)
		io_prep_pread(&iocbs[i], file, aligned(65536), 65536, (i - 32) * 65536);
	io_prep_pwrite(&iocbs[48], full[1], big, sizeof(big), 0);
	io_prep_pread(&iocbs[49], sock[0], rdbuf[0], 8, 0);
	for (int i = 0; i < 50; i++)
		list[i] = &iocbs[i];
	CHECK_RET(io_submit(ctx, 50, list), 50);
	usleep(50 * 1000);
	puts("ok");
	return 0;
}

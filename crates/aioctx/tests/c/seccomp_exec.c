/*
 * seccomp_exec MODE COMMAND [ARG...]: runs COMMAND under a seccomp filter that answers
 * io_uring_setup (or kcmp) as MODE says and allows every other system call:
 *   eperm     fail with EPERM, as Docker's default profile does;
 *   kill      kill the process with SIGSYS (SECCOMP_RET_KILL_PROCESS), as strict
 *             sandboxes do;
 *   trap      send SIGSYS (SECCOMP_RET_TRAP), as Android's policy does;
 *   kill-aio  kill with SIGSYS on io_uring_setup and on io_setup alike;
 *   eperm-kcmp  fail kcmp (not io_uring_setup) with EPERM, as Docker's default profile
 *             does (the drop-in's fastpath test, crates/aioctx-libaio/tests).
 * A raw BPF filter, so that only the kernel headers are needed.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define AUDIT_ARCH_HERE AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define AUDIT_ARCH_HERE AUDIT_ARCH_AARCH64
#else
#error "add this architecture's AUDIT_ARCH"
#endif

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s eperm|kill|trap|kill-aio|eperm-kcmp COMMAND [ARG...]\n", argv[0]);
        return 2;
    }
    unsigned int answer;
    /* The system calls answered: io_setup is matched too only for kill-aio (otherwise
       the second match is the first again). */
    unsigned int denied = __NR_io_uring_setup;
    unsigned int also = __NR_io_uring_setup;
    if (strcmp(argv[1], "eperm") == 0) {
        answer = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
    } else if (strcmp(argv[1], "kill") == 0) {
        answer = SECCOMP_RET_KILL_PROCESS;
    } else if (strcmp(argv[1], "trap") == 0) {
        answer = SECCOMP_RET_TRAP;
    } else if (strcmp(argv[1], "kill-aio") == 0) {
        answer = SECCOMP_RET_KILL_PROCESS;
        also = __NR_io_setup;
    } else if (strcmp(argv[1], "eperm-kcmp") == 0) {
        answer = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
        denied = also = __NR_kcmp;
    } else {
        fprintf(stderr, "%s: unknown mode %s\n", argv[0], argv[1]);
        return 2;
    }
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_HERE, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, denied, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, also, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, answer),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {
        .len = (unsigned short)(sizeof(filter) / sizeof(filter[0])),
        .filter = filter,
    };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        perror("prctl(PR_SET_NO_NEW_PRIVS)");
        return 2;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("prctl(PR_SET_SECCOMP)");
        return 2;
    }
    execvp(argv[2], argv + 2);
    perror("execvp");
    return 2;
}

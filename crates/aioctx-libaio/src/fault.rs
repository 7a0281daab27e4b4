//! A copy of caller memory that turns a fault into `EFAULT`, without a system call: the
//! kernel's own way (`copy_from_user` with an exception-table fixup), in user space.
//!
//! The copy is one `rep movsb` at a known address. A `SIGSEGV`/`SIGBUS` handler, installed
//! once per process before the first copy, looks at the faulting instruction: if it is that
//! `rep movsb`, the fault was ours (the library copying a bad caller pointer) and the handler
//! resumes at the fixup, which returns "faulted"; any other fault is passed on, unchanged, to
//! the handler that was installed before ours (called as it asked to be, with or without
//! `SA_SIGINFO`), or, if there was none, the default action is restored and the faulting
//! instruction runs again into it (a core dump, as without this library). A `SIGSEGV` sent
//! with `kill` is re-raised the same way.
//!
//! Limits, as they stand:
//! - A handler the program installs *after* ours (after its first libaio call) replaces it:
//!   a bad pointer then reaches that handler instead of becoming `EFAULT`. Programs that
//!   chain to the previous handler (the JVM, sanitizers, most crash reporters) keep working.
//! - A thread that blocks `SIGSEGV` cannot take the fault (the kernel then kills the process
//!   on any fault, ours or not): blocking synchronous signals is undefined in POSIX anyway.
//! - Under valgrind, which reports every faulting load it runs, copies go through
//!   `process_vm_readv`/`process_vm_writev` instead (see `user.rs`).
//!
//! x86-64 only; other architectures take the system-call path.

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::sync::{Once, OnceLock};

use libc::{c_int, siginfo_t};

// The copy: rdi = destination, rsi = source, rdx = length; returns 0, or 1 if it faulted.
// The symbols are hidden: they never leave libaio.so.1.
std::arch::global_asm!(
    ".pushsection .text.aioctx_guarded_copy,\"ax\",@progbits",
    ".globl aioctx_guarded_copy",
    ".hidden aioctx_guarded_copy",
    ".type aioctx_guarded_copy,@function",
    "aioctx_guarded_copy:",
    "    mov rcx, rdx",
    ".globl aioctx_guarded_copy_insn",
    ".hidden aioctx_guarded_copy_insn",
    "aioctx_guarded_copy_insn:",
    "    rep movsb",
    "    xor eax, eax",
    "    ret",
    ".globl aioctx_guarded_copy_fixup",
    ".hidden aioctx_guarded_copy_fixup",
    "aioctx_guarded_copy_fixup:",
    "    mov eax, 1",
    "    ret",
    ".size aioctx_guarded_copy, . - aioctx_guarded_copy",
    ".popsection",
);

extern "C" {
    fn aioctx_guarded_copy(dst: *mut u8, src: *const u8, len: usize) -> u32;
    static aioctx_guarded_copy_insn: u8;
    static aioctx_guarded_copy_fixup: u8;
}

/// The handlers that were installed before ours, for `SIGSEGV` and `SIGBUS`.
struct Previous {
    segv: libc::sigaction,
    bus: libc::sigaction,
}

// SAFETY: plain data (handler addresses, flags, a mask), written once before it is shared.
unsafe impl Sync for Previous {}
// SAFETY: as above.
unsafe impl Send for Previous {}

static PREVIOUS: OnceLock<Previous> = OnceLock::new();

/// Installs the fault handler (once per process; forks inherit it).
pub(crate) fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = Previous {
            segv: current_action(libc::SIGSEGV),
            bus: current_action(libc::SIGBUS),
        };
        // Published before ours is installed: a fault that is not ours finds what to chain to.
        let _ = PREVIOUS.set(previous);
        for signal in [libc::SIGSEGV, libc::SIGBUS] {
            // SAFETY: a zeroed sigaction is a valid starting point; every field we rely on
            // is set below.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction =
                on_fault as extern "C" fn(c_int, *mut siginfo_t, *mut c_void) as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: sigemptyset and sigaction get pointers to live locals.
            unsafe {
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
    });
}

fn current_action(signal: c_int) -> libc::sigaction {
    let mut action = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: with a null new action, sigaction only writes the current one into ours.
    unsafe {
        libc::sigaction(signal, std::ptr::null(), action.as_mut_ptr());
        action.assume_init()
    }
}

/// Copies `len` bytes from `src` to `dst`; false if either range faulted (some bytes may
/// have been copied, as with the kernel's `copy_to_user`).
///
/// # Safety
/// `install` has run; whichever of the two ranges is ours is live memory of `len` bytes.
pub(crate) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> bool {
    // SAFETY: the caller's promise; a fault on the caller's range is turned into a return.
    unsafe { aioctx_guarded_copy(dst, src, len) == 0 }
}

extern "C" fn on_fault(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let context = context.cast::<libc::ucontext_t>();
    // SAFETY: the kernel hands an SA_SIGINFO handler the interrupted thread's context, whose
    // registers are ours to read and change for the return.
    let rip = unsafe { &mut (*context).uc_mcontext.gregs[libc::REG_RIP as usize] };
    // The addresses of the two labels of the copy; nothing is read through them.
    let insn = std::ptr::addr_of!(aioctx_guarded_copy_insn) as usize;
    let fixup = std::ptr::addr_of!(aioctx_guarded_copy_fixup) as usize;
    if *rip as usize == insn {
        *rip = fixup as libc::greg_t;
        return;
    }
    pass_on(signal, info, context.cast());
}

/// Hands a fault that is not ours to the previous handler, or to the default action.
fn pass_on(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let previous = PREVIOUS.get().map(|p| match signal {
        libc::SIGBUS => p.bus,
        _ => p.segv,
    });
    match previous {
        Some(action)
            if action.sa_sigaction != libc::SIG_DFL && action.sa_sigaction != libc::SIG_IGN =>
        {
            if action.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the program installed this as an SA_SIGINFO handler.
                let handler = unsafe {
                    std::mem::transmute::<usize, extern "C" fn(c_int, *mut siginfo_t, *mut c_void)>(
                        action.sa_sigaction,
                    )
                };
                handler(signal, info, context);
            } else {
                // SAFETY: the program installed this as a plain handler.
                let handler = unsafe {
                    std::mem::transmute::<usize, extern "C" fn(c_int)>(action.sa_sigaction)
                };
                handler(signal);
            }
        }
        _ => {
            // SAFETY: a zeroed sigaction with SIG_DFL is the default action; raise only
            // queues the signal, delivered (by default: fatally) once this handler returns.
            unsafe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
                // A fault happens again when the instruction is retried; a sent signal
                // (si_code <= 0: kill, tgkill, sigqueue) would not, so it is sent again.
                if (*info).si_code <= 0 {
                    libc::raise(signal);
                }
            }
        }
    }
}

/// Whether this process runs under valgrind (its `RUNNING_ON_VALGRIND` client request: a
/// sequence of rotations that sum to no change natively, which valgrind recognises).
pub(crate) fn under_valgrind() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        const RUNNING_ON_VALGRIND: u64 = 0x1001;
        let request: [u64; 6] = [RUNNING_ON_VALGRIND, 0, 0, 0, 0, 0];
        let mut answer: u64 = 0;
        // SAFETY: natively the rotations of rdi add up to 128 bits (no change) and the xchg
        // of rbx with itself changes nothing; under valgrind the sequence reads `request`
        // and writes the answer to rdx.
        unsafe {
            std::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") request.as_ptr(),
                inout("rdx") answer,
                inout("rdi") 0u64 => _,
            );
        }
        answer != 0
    })
}

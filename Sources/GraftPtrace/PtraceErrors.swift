import GraftCore
import Glibc

/// The one mapping of a failed ptrace request on one thread to a `GraftError`: ESRCH means the thread
/// vanished (killed, exited, or its process exec'd) — ESRCH can arrive on any request — and anything
/// else is named by the request. Called only on the failure path (the context is built there).
extension GraftError {
    static func ptrace(_ request: String, tid: Int32, errno code: Int32 = errno, context: @autoclosure () -> String) -> GraftError {
        code == ESRCH ? .threadVanished(tid: tid) : .systemCall(name: request, errno: code, context: context())
    }

    /// PTRACE_PEEKDATA/POKEDATA of one word: ESRCH the thread vanished; otherwise the address is not
    /// mapped (EIO, EFAULT).
    static func ptraceWord(at address: UInt64, tid: Int32, errno code: Int32 = errno) -> GraftError {
        code == ESRCH ? .threadVanished(tid: tid) : .addressNotMapped(address: address)
    }
}

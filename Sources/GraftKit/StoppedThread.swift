import GraftMachine
import GraftPtrace

/// A stopped thread as `X86DisplacedInstruction.execute` sees it: the registers the hit path read
/// (PTRACE_GETREGS) and the thread's memory, a word at a time (PTRACE_PEEKDATA/POKEDATA).
/// A concrete struct, so the generic `execute` is specialized for it: no witness-table dispatch or
/// metadata look-up per hit.
struct StoppedThread: X86ThreadState {
    var registers: Registers
    let tracee: Tracee
    let tid: Int32

    var rip: UInt64 { get { registers.rip } set { registers.rip = newValue } }
    var rsp: UInt64 { get { registers.rsp } set { registers.rsp = newValue } }
    var rbp: UInt64 { get { registers.rbp } set { registers.rbp = newValue } }
    var eflags: UInt64 { get { registers.eflags } set { registers.eflags = newValue } }
    func register(encoding: Int) -> UInt64 { registers[encoding: encoding] }
    mutating func readWord(at address: UInt64) throws -> UInt64 { try tracee.readWord(at: address, via: tid) }
    mutating func writeWord(_ value: UInt64, at address: UInt64) throws { try tracee.writeWord(value, at: address, via: tid) }
}

extension Breakpoint {
    /// Runs the instruction this int3 displaced for thread `tid`, whose registers (rip rewound to the
    /// breakpoint) are `registers`: emulated on them, or by sending the thread to the copy.
    func runDisplaced(on registers: inout Registers, tid: Int32, tracee: Tracee) throws {
        var thread = StoppedThread(registers: registers, tracee: tracee, tid: tid)
        try displaced.execute(at: address, slot: slot, on: &thread)
        registers = thread.registers
    }
}

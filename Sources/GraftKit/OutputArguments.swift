import GraftCore
import GraftELF
import GraftPtrace

/// Output buffers: what a call wrote where its caller asked (`read(fd, buf, count)`'s `buf`,
/// `getcwd`'s). At the call they hold nothing, so the hit shows the pointer; graft keeps the
/// pointer with the pending return and reads the buffer when the call returns, if it succeeded:
/// `output:ret` as many bytes as the call returned (a positive count), `output:str` the string
/// (after a non-NULL pointer result, or an integer result ≥ 0). Prototypes say which parameters
/// are outputs (`LibcPrototypes`); DWARF cannot tell an output from an input.
struct PendingOutput {
    let name: String
    let type: String
    /// `output:ret` or `output:str`.
    let kind: String
    let address: UInt64
    let register: String
}

extension ArgumentDecoder {
    /// The output buffers among the arguments a hit showed (`outputKinds`, found once per signature).
    func pendingOutputs(_ arguments: [TypedArgument]) -> [PendingOutput] {
        guard !outputKinds.isEmpty else { return [] }
        return arguments.enumerated().compactMap { i, argument in
            guard let kind = outputKinds[i], case .decoded(_, let address) = argument.value, address != 0 else { return nil }
            return PendingOutput(name: argument.name, type: argument.type, kind: kind, address: address, register: argument.register)
        }
    }

    /// The buffers' contents at the return (rax = `result`); a failed call's buffers are left out.
    func readOutputs(_ outputs: [PendingOutput], result: UInt64, read: Reader) -> [TypedArgument] {
        let succeeded: Bool
        switch signature.result?.kind {
        case .pointer?, .string?: succeeded = result != 0
        // An `int` result fills eax only: -1 is 0x00000000ffffffff in rax (gethostname, sprintf).
        case .signed(let size)? where size > 0 && size < 8: succeeded = (result >> UInt64(size * 8 - 1)) & 1 == 0
        default: succeeded = Int64(bitPattern: result) >= 0
        }
        guard succeeded else { return [] }
        return outputs.map { output in
            let value: ArgumentValue
            if output.kind == "output:ret" {
                value = ArgumentDecoder.buffer(at: output.address, length: result, read: read)
            } else {
                value = ArgumentDecoder.cString(at: output.address, read: read)
            }
            return TypedArgument(name: output.name, type: output.type, value: value, register: output.register, raw: output.address)
        }
    }
}

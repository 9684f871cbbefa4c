// Why this shim exists: capstone's per-architecture detail is a union inside cs_detail, x86 operands
// are a struct holding an anonymous union {reg, imm, mem}, and the fixed-size char/uint8_t arrays
// (mnemonic, op_str, prefix, operands) import into Swift as large tuples. Small static inline accessors
// keep the Swift side free of union and tuple juggling. Every accessor tolerates a NULL detail (an
// instruction decoded without CS_OPT_DETAIL) by answering 0.
#ifndef GRAFT_CCAPSTONE_SHIM_H
#define GRAFT_CCAPSTONE_SHIM_H
#include <capstone/capstone.h>

/// The NUL-terminated mnemonic ("mov", "rep movsb").
static inline const char *graft_cs_mnemonic(const cs_insn *insn) { return insn->mnemonic; }

/// The NUL-terminated operand text ("eax, 1").
static inline const char *graft_cs_op_str(const cs_insn *insn) { return insn->op_str; }

/// x86 legacy prefix slot `index` (0: rep/repne/lock, 1: segment, 2: operand size, 3: address size).
static inline uint8_t graft_cs_x86_prefix(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index > 3) return 0;
    return insn->detail->x86.prefix[index];
}

/// Number of x86 operands.
static inline int graft_cs_x86_op_count(const cs_insn *insn) {
    if (insn->detail == NULL) return 0;
    return insn->detail->x86.op_count;
}

/// Type of x86 operand `index` (X86_OP_REG, X86_OP_IMM, X86_OP_MEM), X86_OP_INVALID when out of range.
static inline x86_op_type graft_cs_x86_op_type(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index >= insn->detail->x86.op_count) return X86_OP_INVALID;
    return insn->detail->x86.operands[index].type;
}

/// Immediate of x86 operand `index` (valid when its type is X86_OP_IMM).
static inline int64_t graft_cs_x86_op_imm(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index >= insn->detail->x86.op_count) return 0;
    return insn->detail->x86.operands[index].imm;
}

/// Base register of x86 memory operand `index` (valid when its type is X86_OP_MEM).
static inline x86_reg graft_cs_x86_op_mem_base(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index >= insn->detail->x86.op_count) return X86_REG_INVALID;
    return (x86_reg)insn->detail->x86.operands[index].mem.base;
}

/// Displacement of x86 memory operand `index` (valid when its type is X86_OP_MEM).
static inline int64_t graft_cs_x86_op_mem_disp(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index >= insn->detail->x86.op_count) return 0;
    return insn->detail->x86.operands[index].mem.disp;
}

/// Where the displacement starts in the encoding (0: none). capstone 4's cs_x86_encoding.
static inline uint8_t graft_cs_x86_disp_offset(const cs_insn *insn) {
    if (insn->detail == NULL) return 0;
    return insn->detail->x86.encoding.disp_offset;
}

/// Size of the displacement in bytes (0: none).
static inline uint8_t graft_cs_x86_disp_size(const cs_insn *insn) {
    if (insn->detail == NULL) return 0;
    return insn->detail->x86.encoding.disp_size;
}

/// Number of ARM (A32/Thumb) operands.
static inline int graft_cs_arm_op_count(const cs_insn *insn) {
    if (insn->detail == NULL) return 0;
    return insn->detail->arm.op_count;
}

/// Type of ARM operand `index` (ARM_OP_REG, ARM_OP_IMM, ARM_OP_MEM, …), ARM_OP_INVALID when out of range.
static inline arm_op_type graft_cs_arm_op_type(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index >= insn->detail->arm.op_count) return ARM_OP_INVALID;
    return insn->detail->arm.operands[index].type;
}

/// Immediate of ARM operand `index` (a branch's absolute target for b/bl/blx/cbz).
static inline int32_t graft_cs_arm_op_imm(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index >= insn->detail->arm.op_count) return 0;
    return insn->detail->arm.operands[index].imm;
}

/// Register of ARM operand `index` (valid when its type is ARM_OP_REG).
static inline arm_reg graft_cs_arm_op_reg(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index >= insn->detail->arm.op_count) return ARM_REG_INVALID;
    return (arm_reg)insn->detail->arm.operands[index].reg;
}

/// Base register of ARM memory operand `index` (valid when its type is ARM_OP_MEM).
static inline arm_reg graft_cs_arm_op_mem_base(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index >= insn->detail->arm.op_count) return ARM_REG_INVALID;
    return (arm_reg)insn->detail->arm.operands[index].mem.base;
}

/// Index register of ARM memory operand `index` (ARM_REG_INVALID: an immediate offset).
static inline arm_reg graft_cs_arm_op_mem_index(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index >= insn->detail->arm.op_count) return ARM_REG_INVALID;
    return (arm_reg)insn->detail->arm.operands[index].mem.index;
}

/// Displacement of ARM memory operand `index`.
static inline int32_t graft_cs_arm_op_mem_disp(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index >= insn->detail->arm.op_count) return 0;
    return insn->detail->arm.operands[index].mem.disp;
}

/// ARM operand `index` is subtracted from the base (`[pc, #-4]`, `[r0, -r1]`).
static inline bool graft_cs_arm_op_subtracted(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index >= insn->detail->arm.op_count) return false;
    return insn->detail->arm.operands[index].subtracted;
}

/// Number of AArch64 operands.
static inline int graft_cs_arm64_op_count(const cs_insn *insn) {
    if (insn->detail == NULL) return 0;
    return insn->detail->arm64.op_count;
}

/// Type of AArch64 operand `index`, ARM64_OP_INVALID when out of range.
static inline arm64_op_type graft_cs_arm64_op_type(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index >= insn->detail->arm64.op_count) return ARM64_OP_INVALID;
    return insn->detail->arm64.operands[index].type;
}

/// Immediate of AArch64 operand `index` (the absolute target of b/bl/b.cond/cbz/tbz, ldr literal, adr).
static inline int64_t graft_cs_arm64_op_imm(const cs_insn *insn, int index) {
    if (insn->detail == NULL || index < 0 || index >= insn->detail->arm64.op_count) return 0;
    return insn->detail->arm64.operands[index].imm;
}

/// The condition of an ARM instruction (ARM_CC_AL: always).
static inline arm_cc graft_cs_arm_cc(const cs_insn *insn) {
    if (insn->detail == NULL) return ARM_CC_INVALID;
    return insn->detail->arm.cc;
}

/// The condition of an AArch64 instruction (`b.ne`: ARM64_CC_NE; ARM64_CC_INVALID: none).
static inline arm64_cc graft_cs_arm64_cc(const cs_insn *insn) {
    if (insn->detail == NULL) return ARM64_CC_INVALID;
    return insn->detail->arm64.cc;
}

#endif

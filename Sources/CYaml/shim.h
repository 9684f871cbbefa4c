// Why this shim exists: libyaml's document nodes keep their contents in a union (scalar, sequence,
// mapping) and their items as pointer ranges; these accessors give Swift plain calls instead.
// graft reads patch files (graft apply) with libyaml's document loader: a maintained C parser with a
// static archive in Debian's libyaml-dev, so `make release` links it in like capstone.
#ifndef GRAFT_CYAML_SHIM_H
#define GRAFT_CYAML_SHIM_H
#include <yaml.h>

static inline yaml_node_type_t graft_yaml_node_type(yaml_node_t *node) { return node->type; }
static inline const unsigned char *graft_yaml_scalar_value(yaml_node_t *node) { return node->data.scalar.value; }
static inline size_t graft_yaml_scalar_length(yaml_node_t *node) { return node->data.scalar.length; }
static inline yaml_scalar_style_t graft_yaml_scalar_style(yaml_node_t *node) { return node->data.scalar.style; }
static inline size_t graft_yaml_sequence_count(yaml_node_t *node) {
    return (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
}
static inline int graft_yaml_sequence_item(yaml_node_t *node, size_t i) { return node->data.sequence.items.start[i]; }
static inline size_t graft_yaml_mapping_count(yaml_node_t *node) {
    return (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
}
static inline int graft_yaml_mapping_key(yaml_node_t *node, size_t i) { return node->data.mapping.pairs.start[i].key; }
static inline int graft_yaml_mapping_value(yaml_node_t *node, size_t i) { return node->data.mapping.pairs.start[i].value; }
static inline size_t graft_yaml_problem_line(const yaml_parser_t *parser) { return parser->problem_mark.line + 1; }
static inline size_t graft_yaml_problem_column(const yaml_parser_t *parser) { return parser->problem_mark.column + 1; }
static inline const char *graft_yaml_problem(const yaml_parser_t *parser) { return parser->problem ? parser->problem : "invalid YAML"; }
static inline size_t graft_yaml_node_line(yaml_node_t *node) { return node->start_mark.line + 1; }
#endif

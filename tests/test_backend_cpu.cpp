// The backend conformance suite (backend_suite.h) on the host backends: the scalar reference
// (which checks the suite's own plumbing and hand-computed values against the reference) and the
// CPU backend with 2 and 3 threads (an odd count exercises uneven work splits).
#include "backend_suite.h"

using llmint8::suite::BackendCase;

INSTANTIATE_TEST_SUITE_P(
    Host, BackendSuite,
    ::testing::Values(BackendCase{"reference", [] { return llmint8::make_reference_backend(); }},
                      BackendCase{"cpu2", [] { return llmint8::make_cpu_backend(2); }},
                      BackendCase{"cpu3", [] { return llmint8::make_cpu_backend(3); }}),
    llmint8::suite::backend_case_name);

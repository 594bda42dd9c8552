// The backend conformance suite (backend_suite.h) on the CUDA backend; every test skips when no
// GPU is present (the factory returns null).
#include "backend_suite.h"

using llmint8::suite::BackendCase;

INSTANTIATE_TEST_SUITE_P(
    Cuda, BackendSuite,
    ::testing::Values(BackendCase{"cuda", [] { return llmint8::make_cuda_backend(0); }}),
    llmint8::suite::backend_case_name);

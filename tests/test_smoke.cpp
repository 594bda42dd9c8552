#include <gtest/gtest.h>

#include "llmint8/backend.h"

TEST(Smoke, ReferenceBackendExists) { EXPECT_EQ(llmint8::make_reference_backend()->name(), "reference"); }

#pragma once
#define LLMINT8_VERSION "0.1.0"

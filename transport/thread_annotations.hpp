// Thread-safety annotations (LevelDB's GUARDED_BY): under clang they let -Wthread-safety check
// that shared state is touched only with its mutex held; under g++ they expand to nothing and
// serve as the declaration readers rely on. Header-only; no state.
// TODO(cleanup): move to a project-wide util/ folder once a second folder needs it.
#pragma once

#if defined(__clang__)
#define SY_GUARDED_BY(x) __attribute__((guarded_by(x)))
#define SY_REQUIRES(x) __attribute__((requires_capability(x)))
#else
#define SY_GUARDED_BY(x)
#define SY_REQUIRES(x)
#endif

/* Every kernel and helper is static to this file, so two generated models link into
 * one firmware without clashes; helpers a model does not call are dropped. */
#if defined(__GNUC__) || defined(__clang__)
#define ES_STATIC static __attribute__((unused))
#else
#define ES_STATIC static
#endif

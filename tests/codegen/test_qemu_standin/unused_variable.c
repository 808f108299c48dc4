/* Deliberately triggers -Wunused-variable: proves warnings fail the build. */
int standin_unused(void);
int standin_unused(void)
{
    int unused = 1;
    return 0;
}

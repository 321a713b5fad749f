#include "fan.h"
static volatile int stop; static const char*file; static long opens; static pthread_mutex_t mu=PTHREAD_MUTEX_INITIALIZER;
static void *op(void*a){ long n=0; while(!stop){ int fd=open(file,O_RDONLY); if(fd>=0) close(fd); n++; } pthread_mutex_lock(&mu); opens+=n; pthread_mutex_unlock(&mu); return 0;}
int main(int c,char**v){ int T=atoi(v[1]); double S=atof(v[2]); file=v[3]; pthread_t *t=malloc(T*sizeof *t); for(int i=0;i<T;i++) pthread_create(&t[i],0,op,0); usleep(S*1e6); stop=1; for(int i=0;i<T;i++) pthread_join(t[i],0); printf("%.0f\n",opens/S); return 0;}

#include "fan.h"
int main(int c,char**v){ int P=atoi(v[1]); double S=atof(v[2]); const char*file=v[3]; long *cnt=mmap(0,P*8,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0); volatile int *stop=mmap(0,4096,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0);
 for(int i=0;i<P;i++) if(!fork()){ long n=0; while(!*stop){ int fd=open(file,O_RDONLY); if(fd>=0) close(fd); n++; } cnt[i]=n; _exit(0);} usleep(S*1e6); *stop=1; while(wait(0)>0); long t=0; for(int i=0;i<P;i++) t+=cnt[i]; printf("%.0f\n",t/S); return 0;}

#include "fan.h"
#include <sched.h>
#include <sys/resource.h>
/* flood THREADS SECONDS PRIO(other|nice|fifo) BUFSZ */
#define NB 64
static int g; static volatile int stop;
static long hgap[NB]; static long hage[NB], hbatch_n, hbatch_ev, nans; /* log2 us buckets */
static int bucket(double us){ int b=0; while(us>=1 && b<NB-1){ us/=2; b++; } return b; }
static double pct(long *h,long tot,double p){ long acc=0; for(int b=0;b<NB;b++){ acc+=h[b]; if(acc>=p*tot) return b==0?1:(1<<b);} return -1;}
static size_t bufsz; static const char *prio;
static void *resp(void*a){
  if(!strcmp(prio,"fifo")){ struct sched_param sp={.sched_priority=10}; if(sched_setscheduler(0,SCHED_FIFO,&sp)) perror("fifo"); }
  if(!strcmp(prio,"nice")){ if(setpriority(PRIO_PROCESS,syscall(SYS_gettid),-20)) perror("nice"); }
  char *buf=malloc(bufsz);
  for(;;){ ssize_t n=read(g,buf,bufsz); if(n<=0){ if(errno==EINTR) continue; return 0;}
    uint64_t tr=nowns(); int k=0; uint64_t prev=tr;
    for(struct fanotify_event_metadata*m=(void*)buf;FAN_EVENT_OK(m,n);m=FAN_EVENT_NEXT(m,n)){ struct fanotify_response r={m->fd,FAN_ALLOW}; write(g,&r,sizeof r); uint64_t ta=nowns(); hage[bucket((ta-tr)/1000.0)]++; hgap[bucket((ta-prev)/1000.0)]++; prev=ta; close(m->fd); k++; nans++;}
    hbatch_n++; hbatch_ev+=k; }
}
static const char *file; static long hlat[NB]; static pthread_mutex_t mu=PTHREAD_MUTEX_INITIALIZER; static long opens;
static void *opener(void*a){ long my[NB]={0}, n=0; while(!stop){ uint64_t t0=nowns(); int fd=open(file,O_RDONLY); uint64_t t1=nowns(); if(fd>=0) close(fd); my[bucket((t1-t0)/1000.0)]++; n++; }
  pthread_mutex_lock(&mu); for(int b=0;b<NB;b++) hlat[b]+=my[b]; opens+=n; pthread_mutex_unlock(&mu); return 0;}
int main(int c,char**v){ int T=atoi(v[1]); double S=atof(v[2]); prio=v[3]; bufsz=atol(v[4]); file=v[5];
  g=fanotify_init(FAN_CLASS_CONTENT|FAN_CLOEXEC|FAN_UNLIMITED_QUEUE,O_RDONLY);
  if(fanotify_mark(g,FAN_MARK_ADD,FAN_OPEN_PERM,AT_FDCWD,file)){perror("mark");return 1;}
  int p[2]; pipe(p);
  pid_t o=fork(); if(!o){ /* opener process */
    pthread_t *t=malloc(T*sizeof *t); for(int i=0;i<T;i++) pthread_create(&t[i],0,opener,0);
    usleep((useconds_t)(S*1e6)); stop=1; for(int i=0;i<T;i++) pthread_join(t[i],0);
    struct rusage ru; getrusage(RUSAGE_SELF,&ru);
    printf("T=%3d prio=%-5s buf=%6zu: opens/s=%7.0f  open latency p50<=%.0fus p99<=%.0fus max<=%.0fus  opener ctxsw/open=%.1f  cpu(u+s)=%.1fs\n",T,prio,bufsz,opens/S,pct(hlat,opens,.5),pct(hlat,opens,.99),pct(hlat,opens,1.0),(double)(ru.ru_nvcsw+ru.ru_nivcsw)/opens, ru.ru_utime.tv_sec+ru.ru_stime.tv_sec+(ru.ru_utime.tv_usec+ru.ru_stime.tv_usec)/1e6);
    fflush(stdout); _exit(0);}
  pthread_t t; pthread_create(&t,0,resp,0); waitpid(o,0,0);
  printf("         responder: answers=%ld batches=%ld mean batch=%.1f  age(read->answer) p50<=%.0fus p90<=%.0fus p99<=%.0fus max<=%.0fus | per-decision p99<=%.0fus max<=%.0fus\n",nans,hbatch_n,(double)hbatch_ev/hbatch_n,pct(hage,nans,.5),pct(hage,nans,.9),pct(hage,nans,.99),pct(hage,nans,1),pct(hgap,nans,.99),pct(hgap,nans,1));
  return 0;}

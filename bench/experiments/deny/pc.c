#include "fan.h"
/* pre-content experiments. responder denies everything from pid != allow_pid */
static int gfd; static volatile int allow_pid; static int verbose=1; static uint32_t denyresp = FAN_DENY;
static volatile long nev;
static void *responder(void *a){
  char buf[8192];
  for(;;){ ssize_t n=read(gfd,buf,sizeof buf); if(n<=0){ if(errno==EINTR) continue; return 0;}
    for(struct fanotify_event_metadata *m=(void*)buf; FAN_EVENT_OK(m,n); m=FAN_EVENT_NEXT(m,n)){
      nev++;
      char info[200]=""; 
      for(char *p=(char*)m+m->metadata_len; p<(char*)m+m->event_len; ){
        struct fanotify_event_info_header *h=(void*)p;
        if(h->info_type==FAN_EVENT_INFO_TYPE_RANGE){ struct range_info *r=(void*)p; sprintf(info+strlen(info)," range(len=%u off=%llu count=%llu)",h->len,(unsigned long long)r->off,(unsigned long long)r->count);}
        else sprintf(info+strlen(info)," info(type=%d len=%d)",h->info_type,h->len);
        if(!h->len) break; p+=h->len; }
      struct fanotify_response r={m->fd, m->pid==allow_pid?FAN_ALLOW:denyresp};
      if(verbose){ char lp[64],path[256]=""; sprintf(lp,"/proc/self/fd/%d",m->fd); ssize_t k=readlink(lp,path,255); if(k>0)path[k]=0;
        fprintf(stderr,"  EVENT mask=%#llx pid=%d event_len=%u fd=%d path=%s%s -> %s\n",(unsigned long long)m->mask,m->pid,m->event_len,m->fd,path,info, r.response==FAN_ALLOW?"allow":"deny");}
      if(write(gfd,&r,sizeof r)!=sizeof r) perror("respond");
      close(m->fd);
    }}
}
static const char *file; 
static void op(const char *what){
  int fd; char b[16]; ssize_t n; errno=0;
  if(!strcmp(what,"read")){ fd=open(file,O_RDONLY); if(fd<0){printf("    open: %s\n",strerror(errno));return;} n=read(fd,b,sizeof b); printf("    open+read: n=%zd %s\n",n,n<0?strerror(errno):"ok"); close(fd);}
}
int main(int argc,char**argv){
  /* usage: pc FILE CLASS(pre|content) MASKLIST markflags */
  file=argv[1]; int pre=!strcmp(argv[2],"pre"); uint64_t mask=strtoull(argv[3],0,0); unsigned mflags=argc>4?strtoul(argv[4],0,0):0;
  if(getenv("DENYERR")) denyresp=DENY_ERRNO(atoi(getenv("DENYERR")));
  /* early fd opened before the group exists */
  int early=open(file,O_RDWR); if(early<0) { perror("early open"); }
  int pfd[2]; pipe(pfd);
  gfd=fanotify_init((pre?FAN_CLASS_PRE_CONTENT:FAN_CLASS_CONTENT)|FAN_CLOEXEC|FAN_UNLIMITED_QUEUE, O_RDONLY|O_LARGEFILE);
  if(gfd<0){perror("fanotify_init");return 1;}
  if(fanotify_mark(gfd,FAN_MARK_ADD|mflags,mask,AT_FDCWD,file)<0){ printf("fanotify_mark(%#llx, flags %#x) on %s: %s (errno %d)\n",(unsigned long long)mask,mflags,file,strerror(errno),errno); return 2;}
  printf("mark ok: class=%s mask=%#llx flags=%#x\n",argv[2],(unsigned long long)mask,mflags);
  allow_pid=getpid(); pthread_t t; pthread_create(&t,0,responder,0);
  int late=open(file,O_RDWR); /* by allowed pid: after mark */
  pid_t c=fork();
  if(c==0){ /* child: denied pid */
    char b[16]; ssize_t n;
    errno=0; n=pread(early,b,4,0); printf("  child pread(early fd, opened before group): %zd %s\n",n,n<0?strerror(errno):"ok");
    errno=0; n=pread(late,b,4,0); printf("  child pread(inherited fd opened by allowed pid after mark): %zd %s\n",n,n<0?strerror(errno):"ok");
    errno=0; n=pwrite(late,"x",1,100); printf("  child pwrite(late fd): %zd %s\n",n,n<0?strerror(errno):"ok");
    errno=0; n=pwrite(early,"x",1,100); printf("  child pwrite(early fd): %zd %s\n",n,n<0?strerror(errno):"ok");
    int fd=open(file,O_RDONLY); printf("  child open after mark: %s\n",fd<0?strerror(errno):"ok");
    if(fd>=0){ errno=0; n=read(fd,b,4); printf("  child read(own fd opened after mark): %zd %s\n",n,n<0?strerror(errno):"ok");
      void *p=mmap(0,4096,PROT_READ,MAP_SHARED,fd,0); printf("  child mmap(own fd): %s\n",p==MAP_FAILED?strerror(errno):"ok");
      if(p!=MAP_FAILED){ printf("  child touched mmap: byte=%d\n",((char*)p)[0]); }
      close(fd);}
    void *p=mmap(0,4096,PROT_READ,MAP_SHARED,early,0); printf("  child mmap(early fd): %s\n",p==MAP_FAILED?strerror(errno):"ok");
    errno=0; int r=truncate(file,200); printf("  child truncate(path): %d %s\n",r,r<0?strerror(errno):"ok");
    errno=0; r=ftruncate(early,300); printf("  child ftruncate(early fd): %d %s\n",r,r<0?strerror(errno):"ok");
    errno=0; r=ftruncate(late,300); printf("  child ftruncate(late fd): %d %s\n",r,r<0?strerror(errno):"ok");
    fflush(stdout); _exit(0);}
  waitpid(c,0,0);
  printf("events seen: %ld\n",nev);
  return 0;
}

#include "fan.h"
#include <sys/sendfile.h>
#include <sys/uio.h>
#include <linux/fanotify.h>
static int gfd; static volatile int allow1, allow2; static uint32_t denyresp = FAN_DENY; static volatile long nev; static int quiet;
static void *responder(void *a){
  int g=(long)a; char buf[8192];
  for(;;){ ssize_t n=read(g,buf,sizeof buf); if(n<=0){ if(errno==EINTR) continue; return 0;}
    for(struct fanotify_event_metadata *m=(void*)buf; FAN_EVENT_OK(m,n); m=FAN_EVENT_NEXT(m,n)){
      nev++; char info[200]="";
      for(char *p=(char*)m+m->metadata_len; p<(char*)m+m->event_len; ){
        struct fanotify_event_info_header *h=(void*)p;
        if(h->info_type==FAN_EVENT_INFO_TYPE_RANGE){ struct range_info *r=(void*)p; sprintf(info+strlen(info)," range(off=%llu count=%llu)",(unsigned long long)r->off,(unsigned long long)r->count);}
        else sprintf(info+strlen(info)," info(type=%d len=%d)",h->info_type,h->len);
        if(!h->len) break; p+=h->len; }
      int ok = m->pid==getpid()||m->pid==allow1||m->pid==allow2;
      struct fanotify_response r={m->fd, ok?FAN_ALLOW:denyresp};
      if(!quiet){ char lp[64],path[256]=""; sprintf(lp,"/proc/self/fd/%d",m->fd); ssize_t k=readlink(lp,path,255); if(k>0)path[k]=0;
        fprintf(stderr,"      EVENT mask=%#llx pid=%d len=%u path=%s%s -> %s\n",(unsigned long long)m->mask,m->pid,m->event_len,path,info, ok?"allow":"deny");}
      if(write(g,&r,sizeof r)!=sizeof r) fprintf(stderr,"      respond: %s\n",strerror(errno));
      close(m->fd);
    }}
}
static int mkgroup(int pre){ int g=fanotify_init((pre?FAN_CLASS_PRE_CONTENT:FAN_CLASS_CONTENT)|FAN_CLOEXEC|FAN_UNLIMITED_QUEUE, O_RDONLY|O_LARGEFILE); if(g<0){perror("init");exit(1);} pthread_t t; pthread_create(&t,0,responder,(void*)(long)g); return g;}
static int mark(int g,unsigned fl,uint64_t mask,const char*p){ int r=fanotify_mark(g,FAN_MARK_ADD|fl,mask,AT_FDCWD,p); fprintf(stderr,"    mark(flags=%#x mask=%#llx %s): %s\n",fl,(unsigned long long)mask,p,r<0?strerror(errno):"ok"); return r;}
#define R(x) do{ errno=0; long _r=(long)(x); fprintf(stderr,"    %-52s -> %ld %s\n",#x,_r,_r<0?strerror(errno):""); }while(0)
static void say(const char*s){fprintf(stderr,"  %s\n",s);}
static pid_t child(void){ pid_t c=fork(); return c; }
static void waitc(pid_t c){ waitpid(c,0,0);}
int main(int argc,char**argv){
  const char *sc=argv[1]; const char *f=argv[2]; char b[65536];
  if(getenv("DENYERR")) denyresp=DENY_ERRNO(atoi(getenv("DENYERR")));
  if(!strcmp(sc,"ops")){ /* which operations raise pre-content events, fields */
    int g=mkgroup(1); mark(g,0,FAN_PRE_ACCESS,f);
    pid_t c=child(); if(!c){ int fd=open(f,O_RDWR); int ofd=open("/tmp/i13/mnt/out",O_RDWR|O_CREAT,0600);
      say("child (denied pid):");
      R(pread(fd,b,4,0)); R(pread(fd,b,10,5000)); R(pread(fd,b,100000,0)); R(pwrite(fd,"x",1,100)); R(pwrite(fd,b,3,20000));
      struct iovec iv[2]={{b,10},{b+10,10}}; R(preadv(fd,iv,2,8192));
      off_t o=0; R(sendfile(ofd,fd,&o,100)); loff_t a=0,bb=0; R(copy_file_range(fd,&a,ofd,&bb,100,0));
      R(mmap(0,8192,PROT_READ,MAP_SHARED,fd,4096)); R(mmap(0,8192,PROT_READ,MAP_PRIVATE,fd,0));
      R(fallocate(fd,0,0,70000)); R(ftruncate(fd,100)); R(truncate(f,100)); R(open(f,O_RDWR|O_TRUNC));
      int afd=open(f,O_WRONLY|O_APPEND); R(write(afd,"y",1));
      R(lseek(fd,0,SEEK_SET)); R(read(fd,b,1)); _exit(0);} waitc(c);
    fprintf(stderr,"  events: %ld\n",nev); return 0;}
  if(!strcmp(sc,"early")){ /* fds opened at various moments */
    const char *other=argv[3]; const char *link=argv[4];
    int e0=open(f,O_RDWR); say("e0: opened before any group");
    int g=mkgroup(1); mark(g,0,FAN_PRE_ACCESS,other);
    int e1=open(f,O_RDWR); say("e1: opened with a pre-content group marking another file on the sb");
    int ga=-1; if(getenv("ARM")){ ga=mkgroup(1); unsigned fl=FAN_MARK_FILESYSTEM; mark(ga,fl,FAN_PRE_ACCESS,f); mark(ga,fl|FAN_MARK_IGNORE_SURV_,FAN_PRE_ACCESS,f);} 
    int e2=open(f,O_RDWR); say("e2: opened after the arming sb mark (if ARM) before the inode mark");
    int e3=open(link,O_RDWR); say("e3: opened via a hard link after arming, before the inode mark");
    mark(g,0,FAN_PRE_ACCESS,f);
    int e4=open(link,O_RDWR); say("e4: opened via the hard link after the inode mark");
    pid_t c=child(); if(!c){ say("child (denied pid):"); R(pread(e0,b,4,0)); R(pread(e1,b,4,0)); R(pread(e2,b,4,0)); R(pread(e3,b,4,0)); R(pread(e4,b,4,0)); 
      int e5=open(f,O_RDONLY); R(pread(e5,b,4,0)); _exit(0);} waitc(c);
    fprintf(stderr,"  events: %ld\n",nev); return 0;}
  if(!strcmp(sc,"accessperm")){ /* legacy FAN_ACCESS_PERM, content class, fd opened before group */
    int e0=open(f,O_RDWR); int g=mkgroup(0); mark(g,0,FAN_ACCESS_PERM,f); int e1=open(f,O_RDWR);
    pid_t c=child(); if(!c){ say("child:"); R(pread(e0,b,4,0)); R(pread(e1,b,4,0)); _exit(0);} waitc(c); fprintf(stderr,"  events: %ld\n",nev); return 0;}
  if(!strcmp(sc,"getfd")){ /* allowed A opens after mark; B takes it with pidfd_getfd */
    int g=mkgroup(1); mark(g,0,FAN_PRE_ACCESS|FAN_OPEN_PERM,f);
    int p[2]; pipe(p); int q[2]; pipe(q);
    pid_t A=fork(); if(!A){ int fd=open(f,O_RDONLY); write(p[1],&fd,sizeof fd); pause(); _exit(0);} allow1=A;
    int afd; read(p[0],&afd,sizeof afd);
    pid_t B=fork(); if(!B){ int pfd=syscall(SYS_pidfd_open,A,0); int fd=syscall(SYS_pidfd_getfd,pfd,afd,0); fprintf(stderr,"  B: pidfd_getfd -> %d %s\n",fd,fd<0?strerror(errno):"");
        R(pread(fd,b,4,0)); R(mmap(0,4096,PROT_READ,MAP_SHARED,fd,0)); _exit(0);} waitc(B); kill(A,9); waitc(A);
    fprintf(stderr,"  events: %ld\n",nev); return 0;}
  if(!strcmp(sc,"thread")){ int g=mkgroup(1); mark(g,0,FAN_PRE_ACCESS,f); int fd=open(f,O_RDONLY);
    pid_t c=child(); if(!c){ fprintf(stderr,"  child pid %d\n",getpid()); pthread_t t; void *th(void*x){ fprintf(stderr,"  thread tid %ld\n",syscall(SYS_gettid)); R(pread(fd,b,4,0)); return 0;} pthread_create(&t,0,th,0); pthread_join(t,0); _exit(0);} waitc(c); return 0;}
  if(!strcmp(sc,"marks")){ /* which marks are allowed where */
    int g=mkgroup(1); mark(g,0,FAN_PRE_ACCESS,f); mark(g,0,FAN_PRE_ACCESS|FAN_OPEN_PERM|FAN_OPEN_EXEC_PERM,f);
    mark(g,0,FAN_PRE_ACCESS|FAN_EVENT_ON_CHILD,argv[3]); mark(g,FAN_MARK_MOUNT,FAN_PRE_ACCESS,f); mark(g,FAN_MARK_FILESYSTEM,FAN_PRE_ACCESS,f);
    mark(g,0,FAN_PRE_ACCESS|FAN_ONDIR,argv[3]);
    int gc=mkgroup(0); say("content class group:"); mark(gc,0,FAN_PRE_ACCESS,f); mark(gc,0,FAN_OPEN_PERM,f); mark(gc,0,FAN_ACCESS_PERM,f);
    int gr=fanotify_init(FAN_CLASS_PRE_CONTENT|FAN_REPORT_FID,0); fprintf(stderr,"    init(PRE_CONTENT|REPORT_FID): %s\n",gr<0?strerror(errno):"ok");
    if(gr>=0) mark(gr,0,FAN_PRE_ACCESS,f);
    pid_t c=child(); if(!c){ say("child:"); R(open(f,O_RDONLY)); _exit(0);} waitc(c); return 0;}
  if(!strcmp(sc,"errno")){ /* deny errno responses */
    int g=mkgroup(atoi(argv[3])); mark(g,0,FAN_PRE_ACCESS|FAN_OPEN_PERM,f); int fd=open(f,O_RDWR);
    pid_t c=child(); if(!c){ R(pread(fd,b,4,0)); R(pwrite(fd,"z",1,0)); R(open(f,O_RDONLY)); _exit(0);} waitc(c); return 0;}
  return 3;
}

#include "fan.h"
#include <signal.h>
struct H { struct file_handle h; unsigned char b[128]; };
static void gethandle(const char*p,struct H*h,int flags){ int mid; h->h.handle_bytes=128; if(name_to_handle_at(AT_FDCWD,p,&h->h,&mid,flags)) { printf("  name_to_handle_at(%s): %s\n",p,strerror(errno)); h->h.handle_bytes=0;} }
static void pr(const char*w,struct H*h){ printf("  %s handle type=%d bytes=%u:",w,h->h.handle_type,h->h.handle_bytes); for(unsigned i=0;i<h->h.handle_bytes;i++) printf("%02x",h->h.f_handle[i]); printf("\n"); }
int main(){ system("mkdir -p /tmp/i13/mnt/bin && cp /bin/sleep /tmp/i13/mnt/bin/prog");
  int mnt=open("/tmp/i13/mnt",O_RDONLY|O_DIRECTORY);
  pid_t p=fork(); if(!p){ execl("/tmp/i13/mnt/bin/prog","prog","100",NULL); _exit(1);} usleep(100000);
  char ep[64],l[512]; sprintf(ep,"/proc/%d/exe",p); struct stat st; stat(ep,&st); ssize_t k=readlink(ep,l,511); l[k]=0;
  printf("before upgrade: exe=%s ino=%lu\n",l,st.st_ino); struct H h0; gethandle(ep,&h0,AT_SYMLINK_FOLLOW); pr("exe",&h0);
  system("cp /bin/sleep /tmp/i13/mnt/bin/prog.new && mv /tmp/i13/mnt/bin/prog.new /tmp/i13/mnt/bin/prog");
  stat(ep,&st); k=readlink(ep,l,511); l[k]=0; printf("after rename-over upgrade: exe=%s ino=%lu nlink=%lu\n",l,st.st_ino,st.st_nlink);
  struct H h1; gethandle(ep,&h1,AT_SYMLINK_FOLLOW); pr("exe (deleted)",&h1);
  struct stat sn; stat("/tmp/i13/mnt/bin/prog",&sn); printf("  path now resolves to ino=%lu\n",sn.st_ino);
  int fd=open_by_handle_at(mnt,&h0.h,O_PATH); printf("  open_by_handle_at(old handle) while running: %s\n",fd<0?strerror(errno):"ok"); if(fd>=0) close(fd);
  kill(p,9); waitpid(p,0,0); 
  sync(); /* try to get the inode evicted */
  int fd2=open_by_handle_at(mnt,&h0.h,O_PATH); printf("  open_by_handle_at(old handle) after the process exited: %s\n",fd2<0?strerror(errno):"ok (inode still cached?)"); if(fd2>=0) close(fd2);
  /* reuse of the inode number */
  char fn[100]; int reused=0; for(int i=0;i<2000&&!reused;i++){ sprintf(fn,"/tmp/i13/mnt/bin/n%d",i); int x=open(fn,O_CREAT|O_WRONLY,0755); struct stat s2; fstat(x,&s2); close(x); if(s2.st_ino==st.st_ino){ reused=1; struct H h2; gethandle(fn,&h2,0); printf("  inode number %lu reused by %s after %d creations\n",st.st_ino,fn,i+1); pr("new file",&h2);
      int y=open_by_handle_at(mnt,&h0.h,O_PATH); printf("  open_by_handle_at(old handle) now: %s\n",y<0?strerror(errno):"ok");} }
  if(!reused) printf("  inode number not reused in 2000 creations\n");
  system("rm -rf /tmp/i13/mnt/bin"); return 0;}
